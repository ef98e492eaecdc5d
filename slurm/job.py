"""A training run as a checkpointable submitit job: it stops at a step boundary on USR2/SIGTERM, requeues
itself, resumes from its run dir, and never reruns a finished run.

submitit's own USR2 handler would pickle and requeue the job from inside the signal handler, in the middle
of a step. Here USR2 and SIGTERM only call `request_stop` (the training loop's flag; the loop may install
the same handlers itself). The loop finishes the step, writes its checkpoint and returns unfinished; then
the job requeues itself if Slurm still reports it RUNNING (USR2 `signal_delay_s` before the time limit, or
`scancel --signal=USR2`). When Slurm is already ending the job (scancel, or a requeue or preemption Slurm
started itself: state COMPLETING) the job is left alone, so a cancelled run stays cancelled.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Callable, NoReturn, Optional, Protocol

from submitit import JobEnvironment
from submitit.helpers import Checkpointable, TorchDistributedEnvironment

from slurm import run_state
from slurm.errors import SlurmError
from slurm.launch import queue_state

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class RunOutcome(Protocol):
    """What the training callable returns."""

    finished: bool
    step: int
    stopped_by_signal: bool


@dataclass(frozen=True)
class CompletedRun:
    run_dir: str
    step: int
    already_finished: bool  # the run had finished before this job started, so nothing ran


class TrainJob(Checkpointable):
    """`run()` trains in `run_dir` up to `steps`, resuming from whatever the run dir holds; `request_stop()` asks
    it to stop. A run already finished at `steps` or later is not run again.

    Both callables must be picklable (module-level functions, functools.partial of them). submitit's inherited
    `checkpoint()` only returns the resubmission of this object; it serves a signal that arrives before
    __call__ has replaced submitit's handler. Everything needed to resume is on disk, never in the pickle.
    """

    def __init__(self, run: Callable[[], RunOutcome], request_stop: Callable[[], None], run_dir: str | Path,
                 steps: int, max_requeues: int):
        self.run = run
        self.request_stop = request_stop
        self.run_dir = str(run_dir)
        self.steps = steps
        self.max_requeues = max_requeues

    def __call__(self) -> CompletedRun:
        # Each task keeps every GPU of its node visible and uses cuda:LOCAL_RANK.
        dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_stop_signal)
        run_dir = Path(self.run_dir)
        state = run_state.read(run_dir)
        if state.finished_step is not None and state.finished_step >= self.steps:
            print(f"{run_dir} finished at step {state.finished_step} before this job; not rerun", flush=True)
            return CompletedRun(self.run_dir, state.finished_step, already_finished=True)
        if dist_env.rank == 0:
            job_id = JobEnvironment().job_id
            state.world_size = dist_env.world_size
            state.starts += 1
            state.job_ids += [] if job_id in state.job_ids else [job_id]
            run_state.write(run_dir, state)

        outcome = self.run()

        if outcome.finished:
            if dist_env.rank == 0:
                state = run_state.read(run_dir)
                state.finished_step = outcome.step
                run_state.write(run_dir, state)
            return CompletedRun(self.run_dir, outcome.step, already_finished=False)
        if not outcome.stopped_by_signal:
            raise SlurmError(f"training in {run_dir} returned unfinished at step {outcome.step} without a stop request")
        if dist_env.rank != 0:
            print(f"rank {dist_env.rank}: stopped at step {outcome.step}; rank 0 requeues the job", flush=True)
            sys.exit(0)  # no result file: to submitit the job is not over
        self._requeue(run_dir, outcome.step)

    def _on_stop_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        print(f"caught {signal.Signals(signum).name}: stopping at the next step boundary", flush=True)
        self.request_stop()

    def _requeue(self, run_dir: Path, step: int) -> NoReturn:
        env = JobEnvironment()
        if env.cluster == "slurm":
            state_now = queue_state(env.job_id)
            if state_now != "RUNNING":
                print(f"stopped at step {step}; Slurm is already ending job {env.job_id} ({state_now or 'gone'}: "
                      "cancelled, or requeued by Slurm itself), so the job does not requeue itself", flush=True)
                sys.exit(0)
        state = run_state.read(run_dir)
        if state.requeues >= self.max_requeues:
            raise SlurmError(f"{run_dir} stopped at step {step} but is not requeued: it already requeued itself "
                             f"{state.requeues} times (max_requeues={self.max_requeues}); resubmit it to continue")
        state.requeues += 1
        run_state.write(run_dir, state)
        print(f"stopped at step {step}; requeueing job {env.job_id} (requeue {state.requeues} of at most "
              f"{self.max_requeues}); it resumes from {run_dir}", flush=True)
        try:
            env._requeue(self.max_requeues - state.requeues)  # Slurm: scontrol requeue; local: exit code 144
        except subprocess.CalledProcessError as e:
            raise SlurmError(f"{run_dir} stopped cleanly at step {step} but `scontrol requeue {env.job_id}` failed "
                             f"({e}); resubmit the run to continue") from None
        sys.exit(0)  # Slurm now ends this allocation and starts the job again; no result file is written

