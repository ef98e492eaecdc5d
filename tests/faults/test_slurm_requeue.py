"""A Slurm training job preempted (USR2) and requeued three times ends with the weights of a job never
interrupted (the real single-node cluster; `make faults` only)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.commands import submit
from slurm import run_state
from tests.contrastive.command_line import run_command
from tests.faults.runs import assert_same_weights, final_weights, tiny_run_overrides
from tests.slurm.waiting import release_when_requeued, wait_until

SLURM = ["slurm.gpus_per_node=0", "slurm.cpus_per_task=1", "slurm.timeout_min=10", "slurm.signal_delay_s=30"]
STEPS = 60


def submit_run(tmp_path: Path, run_dir: Path, capsys) -> str:
    overrides = tiny_run_overrides(tmp_path, run_dir, f"train.steps={STEPS}", "train.checkpoint_every=5", *SLURM)
    assert run_command(submit, "submit", "train", *overrides) == 0
    (job_id,) = re.findall(r"^submitted job (\S+):", capsys.readouterr().out, flags=re.MULTILINE)
    return job_id


def latest_step(run_dir: Path) -> int:
    latest = Checkpointer(run_dir).latest()
    return load_checkpoint(latest)["step"] if latest is not None else 0


@pytest.mark.slurm
@pytest.mark.all_faults
def test_a_job_requeued_three_times_ends_with_the_weights_of_one_never_interrupted(tmp_path, capsys, figures):
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    submit_run(tmp_path, straight, capsys)
    job_id = submit_run(tmp_path, requeued, capsys)
    stopped_at = 0
    for _ in range(3):
        wait_until(lambda: latest_step(requeued) > stopped_at, 240, f"job {job_id} to train past step {stopped_at}")
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        release_when_requeued(job_id, timeout_s=120)
        stopped_at = latest_step(requeued)
        assert stopped_at < STEPS
    for run_dir in (straight, requeued):
        wait_until(lambda: run_state.read(run_dir).finished_step == STEPS, 300, f"{run_dir.name} to finish")
    state = run_state.read(requeued)
    assert (state.starts, state.requeues, state.job_ids) == (4, 3, [job_id])
    assert_same_weights(final_weights(straight), final_weights(requeued))
    figures["Slurm requeues survived (exact weights)"] += 3
