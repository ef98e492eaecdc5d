"""Polling helpers for tests that watch jobs from outside."""
from __future__ import annotations

import subprocess
import time
from typing import Callable


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(poll_s)


def squeue_state(job_id: str) -> str:
    """The job's state as squeue shows it, '' once it has left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def release_when_requeued(job_id: str, timeout_s: float = 60) -> None:
    """A requeued job is held ~120 s (BeginTime) before it is eligible again; start it now."""
    wait_until(lambda: squeue_state(job_id) == "PENDING", timeout_s, f"job {job_id} to be requeued")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, capture_output=True)
