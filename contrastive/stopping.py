"""Stops from outside: SIGTERM, SIGUSR2 (Slurm's and submitit's warnings) and SIGINT (Ctrl-C), whether sent to
the main process or to the whole process group (loader workers ignore them: data/workers.py).

Two ways to stop, for two kinds of command:
- Training stops at a step boundary: after `install_handlers()` a signal only sets a flag; the loop
  all-reduces it, so every rank stops after the same step, writes the checkpoint and returns. A second
  Ctrl-C raises KeyboardInterrupt at once (a checkpoint being written is then discarded whole: `latest`
  still names the previous one).
- Commands without steps (evaluation, data conversion) stop at once: inside `raising_on_stop()` a signal
  raises `Stopped` in the main thread, and what was being written is discarded whole (atomic writes).

The exit code says how: 0 after SIGTERM or SIGUSR2 (a stop that kept the work: Slurm, `timeout`), 130
after SIGINT, as a shell expects of Ctrl-C.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator, Optional

from data.workers import STOP_SIGNALS  # the signals the workers leave to this process

# One Ctrl-C can arrive twice: from the terminal to the whole group and forwarded by a launcher (torchrun's
# agent sends its children the signal it got). Within this window a second SIGINT is the same Ctrl-C.
SAME_CTRL_C_S = 1.0

_requested = threading.Event()
_first: Optional[tuple[int, float]] = None  # (signal, monotonic time) of the first stop request


class Stopped(BaseException):
    """A stop signal inside `raising_on_stop()`. Not an Exception: `except Exception` must not swallow it."""

    def __init__(self, signum: int, kept: str = "nothing half-written is left"):
        super().__init__(f"stopped by {signal.Signals(signum).name}: {kept}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)


def exit_code_for(signum: Optional[int]) -> int:
    return 130 if signum == signal.SIGINT else 0


def request_stop(signum: int = signal.SIGTERM, _frame: object = None) -> None:
    """The training handler: remember the first stop; a later Ctrl-C (not the same one twice) exits at once."""
    global _first
    now = time.monotonic()
    if _first is None:
        _first = (signum, now)
    elif signum == signal.SIGINT and now - _first[1] > SAME_CTRL_C_S:
        raise KeyboardInterrupt
    _requested.set()


def stop_requested() -> bool:
    return _requested.is_set()


def stop_signal() -> Optional[int]:
    """The signal of the first stop request, None without one."""
    return _first[0] if _first is not None else None


def signal_name(signum: Optional[int]) -> str:
    return signal.Signals(signum).name if signum is not None else "another rank's signal"


def reset() -> None:
    global _first
    _first = None
    _requested.clear()


def install_handlers() -> None:
    """Only the main thread may install signal handlers; elsewhere (a test's thread) the flag is set by hand."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, request_stop)


@contextlib.contextmanager
def raising_on_stop() -> Iterator[None]:
    """Inside, a stop signal (or one that arrived just before) raises Stopped; the previous handlers come back
    on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stopped(signum: int, _frame: object) -> None:
        request_stop(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, raise_stopped) for sig in STOP_SIGNALS}
    try:
        if stop_requested():
            raise Stopped(stop_signal() or signal.SIGTERM)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
