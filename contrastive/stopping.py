"""Graceful stop: SIGTERM and SIGUSR2 (Slurm's and submitit's warnings) only set a flag.

The training loop all-reduces the flag at step boundaries, so every rank stops after the same step,
writes the checkpoint and returns.
"""
from __future__ import annotations

import signal
import threading

_requested = threading.Event()
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def request_stop(*_: object) -> None:
    _requested.set()


def stop_requested() -> bool:
    return _requested.is_set()


def reset() -> None:
    _requested.clear()


def install_handlers() -> None:
    """Only the main thread may install signal handlers; elsewhere (a test's thread) the flag is set by hand."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, request_stop)
