"""Worker processes (DataLoader workers, conversion pools) leave stopping to their parent.

SIGTERM, SIGINT and SIGUSR2 sent to the whole process group (Slurm's scancel and time limit, `timeout`,
Ctrl-C in a terminal) reach the workers too. torch's DataLoader worker re-raises a SIGTERM that does not
come from its parent and dies of it, and the parent then fails with "DataLoader worker (pid N) is killed by
signal: Terminated"; a Ctrl-C raises KeyboardInterrupt in every pool worker. So workers ignore these
signals: the parent decides when to stop and shuts its workers down itself. A worker whose parent is gone
exits on its own (torch's worker watchdog; a pool worker reads EOF from its task pipe).
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def ignore_stop_signals(*_: object) -> None:
    """A DataLoader `worker_init_fn` (it gets the worker id) and a Pool `initializer` (it gets nothing)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
