"""Polling helpers for tests that watch jobs from outside."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable

from slurm.launch import queue_state


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(poll_s)


def release_when_requeued(job_id: str, timeout_s: float = 60) -> None:
    """A requeued job is held ~120 s (BeginTime) before it is eligible again; start it now, or nearly.

    That hold is what keeps two races in Slurm away on real clusters, and a test that skips it has to keep
    them away itself: the old batch script's exit status arrives after the job is already PENDING, and a job
    started before that gets the old exit and ends FAILED; and the node revokes the old allocation's job
    credential with a one-second resolution, so a start within the same second is killed as "Job credential
    revoked". So: wait for the old slurmstepd to exit (the single test node is this machine), then 2 s more.
    """
    wait_until(lambda: queue_state(job_id) == "PENDING" and not job_steps_alive(job_id), timeout_s,
               f"job {job_id} to be requeued and its old steps to exit")
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, capture_output=True)


def job_steps_alive(job_id: str) -> bool:
    """Does a slurmstepd of this (plain, non-array) job still run on this machine?"""
    prefix = f"slurmstepd: [{job_id}.".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(prefix):
                return True
        except OSError:  # the process exited while we looked
            continue
    return False
