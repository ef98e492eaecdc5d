"""queue_state against a scripted squeue: a failed look is retried, never taken for a job that has left the queue."""
import os
import stat
from pathlib import Path

import pytest

from slurm.errors import SlurmError
from slurm.launch import queue_state


def fake_squeue(tmp_path: Path, monkeypatch, *replies: tuple[int, str, str]) -> None:
    """squeue on PATH that gives `replies` (exit code, stdout, stderr) in order, one per call, then the last forever."""
    calls = tmp_path / "calls"
    calls.write_text("0")
    cases = "\n".join(f'  {i}) printf "{out}"; printf "{err}" >&2; exit {rc};;'
                      for i, (rc, out, err) in enumerate(replies))
    script = tmp_path / "squeue"
    script.write_text(f"""#!/usr/bin/env bash
n=$(cat {calls}); echo $((n + 1)) > {calls}
[ "$n" -ge {len(replies)} ] && n={len(replies) - 1}
case $n in
{cases}
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_a_busy_controller_is_retried_until_squeue_answers(tmp_path, monkeypatch):
    timeout = "slurm_load_jobs error: Socket timed out on send/recv operation\n"
    fake_squeue(tmp_path, monkeypatch, (1, "", timeout), (1, "", timeout), (0, "PENDING\n", ""))
    assert queue_state("7", retry_s=0) == "PENDING"
    assert (tmp_path / "calls").read_text().strip() == "3"


def test_a_job_the_controller_no_longer_knows_has_left_the_queue(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, (1, "", "slurm_load_jobs error: Invalid job id specified\n"))
    assert queue_state("7", retry_s=0) == ""


def test_squeue_failing_every_time_is_an_error_naming_the_job(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, (1, "", "slurm_load_jobs error: Unable to contact slurm controller\n"))
    with pytest.raises(SlurmError, match="squeue could not report job 7 in 3 tries: .*Unable to contact"):
        queue_state("7", retries=3, retry_s=0)
