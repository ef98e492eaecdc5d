"""TrainJob under submitit's local executor: runs everywhere, same lifecycle as on Slurm (requeue = exit 144)."""
import json
import os
import signal
from pathlib import Path

import pytest
from submitit.core.utils import FailedJobError

from slurm import launch, run_state
from slurm.job import CompletedRun, TrainJob
from slurm.resources import Resources
from tests.slurm import toy
from tests.slurm.waiting import wait_until

ONE_TASK = Resources(timeout_min=5, signal_delay_s=30)


def submit_counter(run_dir: Path, steps: int, resources: Resources = ONE_TASK, step_s: float = 0.05):
    job = TrainJob(toy.CounterRun(str(run_dir), steps, step_s), toy.request_stop, run_dir, steps,
                   resources.max_requeues)
    return launch.submit([job], [run_dir / "slurm"], resources, local=True, job_name="toy")[0]


def test_runs_to_the_end_and_records_the_run(tmp_path):
    job = submit_counter(tmp_path, steps=5)
    assert job.result() == CompletedRun(str(tmp_path), 5, already_finished=False)
    assert toy.counter(tmp_path) == 5
    state = run_state.read(tmp_path)
    assert (state.world_size, state.starts, state.requeues, state.finished_step) == (1, 1, 0, 5)
    assert state.job_ids == [job.job_id]
    assert sorted(p.name for p in (tmp_path / "slurm").glob(f"{job.job_id}_*")) == [
        f"{job.job_id}_0_log.err", f"{job.job_id}_0_log.out", f"{job.job_id}_0_result.pkl",
        f"{job.job_id}_submitted.pkl"]


def test_usr2_stops_at_a_step_then_requeues_and_resumes_the_counter(tmp_path):
    job = submit_counter(tmp_path, steps=60)
    wait_until(lambda: toy.counter(tmp_path) >= 5, 30, "the counter to reach 5")
    os.kill(toy.starts(tmp_path)[0][1], signal.SIGUSR2)

    assert job.result() == CompletedRun(str(tmp_path), 60, already_finished=False)
    (first, _), (resumed_from, _) = toy.starts(tmp_path)
    assert first == 0 and 5 <= resumed_from < 60
    state = run_state.read(tmp_path)
    assert (state.starts, state.requeues, state.finished_step) == (2, 1, 60)


def test_a_finished_run_is_not_rerun_but_continues_to_more_steps(tmp_path):
    submit_counter(tmp_path, steps=3).result()
    again = submit_counter(tmp_path, steps=3).result()
    assert again == CompletedRun(str(tmp_path), 3, already_finished=True)
    assert [step for step, _ in toy.starts(tmp_path)] == [0] and toy.counter(tmp_path) == 3

    longer = submit_counter(tmp_path, steps=5).result()
    assert longer == CompletedRun(str(tmp_path), 5, already_finished=False)
    assert [step for step, _ in toy.starts(tmp_path)] == [0, 3] and run_state.read(tmp_path).finished_step == 5


def test_a_job_that_comes_back_with_another_world_size_resumes(tmp_path):
    run_state.write(tmp_path, run_state.RunState(world_size=2, starts=1))
    (tmp_path / "counter").write_text("2")  # where the 2-task job stopped
    assert submit_counter(tmp_path, steps=4).result() == CompletedRun(str(tmp_path), 4, already_finished=False)
    assert [step for step, _ in toy.starts(tmp_path)] == [2]
    state = run_state.read(tmp_path)
    assert (state.world_size, state.starts, state.finished_step) == (1, 2, 4)


def test_no_requeue_past_max_requeues(tmp_path):
    job = submit_counter(tmp_path, steps=60, resources=Resources(timeout_min=5, signal_delay_s=30, max_requeues=0))
    wait_until(lambda: toy.counter(tmp_path) >= 2, 30, "the counter to reach 2")
    os.kill(toy.starts(tmp_path)[0][1], signal.SIGUSR2)
    with pytest.raises(FailedJobError, match="already requeued itself 0 times"):
        job.result()
    assert len(toy.starts(tmp_path)) == 1 and toy.counter(tmp_path) < 60


def test_two_tasks_join_one_gloo_group_from_the_exported_environment(tmp_path):
    resources = Resources(timeout_min=5, signal_delay_s=30, tasks_per_node=2)
    job = TrainJob(toy.AllReduceRun(str(tmp_path)), toy.request_stop, tmp_path, 1, resources.max_requeues)
    results = launch.submit([job], [tmp_path / "slurm"], resources, local=True, job_name="toy")[0].results()
    assert [r.step for r in results] == [1, 1]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["local_rank"], r["world_size"], r["sum"]) for r in records] == [
        (0, 0, 2, 3.0), (1, 1, 2, 3.0)]
    assert run_state.read(tmp_path).world_size == 2


def test_local_jobs_submitted_together_share_the_cores_and_a_chosen_thread_count_is_kept(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    jobs = launch.submit([toy.cpu_threads] * 3, [tmp_path / f"job{i}" for i in range(3)], ONE_TASK, local=True,
                         job_name="toy")
    share = launch.local_threads(3)
    assert [job.result() for job in jobs] == [(str(share), share)] * 3
    assert f"3 local processes at once: OMP_NUM_THREADS={share} each" in capsys.readouterr().out
    assert "OMP_NUM_THREADS" not in os.environ

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with launch.local_thread_share(3):
        assert os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "3" and "OMP_NUM_THREADS" not in capsys.readouterr().out
