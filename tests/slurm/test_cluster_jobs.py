"""TrainJob and job arrays on a real Slurm cluster (../shared/slurm/up.sh in CI): submit, preempt, requeue, resume."""
import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from slurm import launch, run_state
from slurm.errors import SlurmError
from slurm.job import CompletedRun, TrainJob
from slurm.resources import Resources
from tests.slurm import toy
from tests.slurm.waiting import release_when_requeued, wait_until

pytestmark = pytest.mark.slurm
ONE_CPU = Resources(cpus_per_task=1, timeout_min=5, signal_delay_s=30)


def counter_job(run_dir: Path, steps: int, step_s: float = 0.05) -> TrainJob:
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainJob(toy.CounterRun(str(run_dir), steps, step_s), toy.request_stop, run_dir, steps, ONE_CPU.max_requeues)


def submit_one(run_dir: Path, steps: int, step_s: float = 0.05):
    return launch.submit([counter_job(run_dir, steps, step_s)], [run_dir / "slurm"], ONE_CPU, local=False,
                         job_name="toy")[0]


def test_array_of_three_runs_with_logs_in_each_run_dir(tmp_path):
    run_dirs = [tmp_path / f"point{i}" for i in range(3)]
    two_at_a_time = dataclasses.replace(ONE_CPU, array_parallelism=2)
    jobs = launch.submit([counter_job(d, steps=3 + i) for i, d in enumerate(run_dirs)], [d / "slurm" for d in run_dirs],
                         two_at_a_time, local=False, job_name="toy", array_folder=tmp_path / "slurm")
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(3)]
    script = (tmp_path / "slurm" / array_id / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --signal=USR2@30" in script
    assert [j.result() for j in jobs] == [CompletedRun(str(d), 3 + i, False) for i, d in enumerate(run_dirs)]
    for job, run_dir in zip(jobs, run_dirs):
        logs = run_dir / "slurm" / job.job_id
        assert logs.is_symlink() and logs.resolve() == (tmp_path / "slurm" / job.job_id).resolve()
        assert (logs / f"{job.job_id}_0_log.out").exists()


def test_usr2_before_the_limit_stops_requeues_itself_and_the_counter_continues(tmp_path):
    job = submit_one(tmp_path, steps=40)
    wait_until(lambda: toy.counter(tmp_path) >= 3, 60, "the counter to reach 3")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    release_when_requeued(job.job_id)

    assert launch.final_results(job) == [CompletedRun(str(tmp_path), 40, already_finished=False)]
    (first, _), (resumed_from, _) = toy.starts(tmp_path)
    assert first == 0 and 3 <= resumed_from < 40
    state = run_state.read(tmp_path)
    assert (state.starts, state.requeues, state.finished_step, state.job_ids) == (2, 1, 40, [job.job_id])


def test_requeue_by_slurm_resumes_without_a_second_requeue(tmp_path):
    job = submit_one(tmp_path, steps=40)
    wait_until(lambda: toy.counter(tmp_path) >= 3, 60, "the counter to reach 3")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    release_when_requeued(job.job_id)

    assert launch.final_results(job)[0].step == 40
    (first, _), (resumed_from, _) = toy.starts(tmp_path)
    assert first == 0 and 3 <= resumed_from < 40
    assert run_state.read(tmp_path).requeues == 0  # Slurm requeued it; the job did not add its own


def test_scancel_stops_the_run_for_good(tmp_path):
    job = submit_one(tmp_path, steps=400)
    wait_until(lambda: toy.counter(tmp_path) >= 3, 60, "the counter to reach 3")
    subprocess.run(["scancel", job.job_id], check=True)
    wait_until(lambda: launch.queue_state(job.job_id) == "", 60, "the cancelled job to leave the queue")
    stopped_at = toy.counter(tmp_path)
    out = subprocess.run(["sacct", "-n", "-X", "-j", job.job_id, "-o", "State%40"], capture_output=True, text=True)
    assert out.stdout.strip().startswith("CANCELLED")
    assert toy.counter(tmp_path) == stopped_at < 400 and len(toy.starts(tmp_path)) == 1
    assert run_state.read(tmp_path).requeues == 0


def test_two_tasks_do_ddp_over_gloo(tmp_path):
    resources = Resources(cpus_per_task=1, tasks_per_node=2, timeout_min=5, signal_delay_s=30)
    job = TrainJob(toy.AllReduceRun(str(tmp_path)), toy.request_stop, tmp_path, 1, resources.max_requeues)
    results = launch.submit([job], [tmp_path / "slurm"], resources, local=False, job_name="toy")[0].results()
    assert [r.step for r in results] == [1, 1]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["local_rank"], r["world_size"], r["sum"]) for r in records] == [
        (0, 0, 2, 3.0), (1, 1, 2, 3.0)]


def test_an_invalid_partition_surfaces_sbatch_refusal(tmp_path):
    with pytest.raises(SlurmError, match="sbatch refused the job: .*invalid partition"):
        launch.submit([counter_job(tmp_path, 1)], [tmp_path / "slurm"], Resources(partition="no_such_partition"),
                      local=False, job_name="toy")


def test_without_slurm_on_path_the_error_says_to_use_local(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="no Slurm cluster reachable .*sbatch.* not found.*pass --local"):
        launch.submit([counter_job(tmp_path, 1)], [tmp_path / "slurm"], ONE_CPU, local=False, job_name="toy")
    assert os.listdir(tmp_path / "slurm") == []
