"""Stand-ins for training in the slurm tests. Jobs unpickle these by reference, so they live in an importable
module (jobs run from the repository root, where `tests` is a package)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_stop = threading.Event()


def request_stop() -> None:
    _stop.set()


@dataclass(frozen=True)
class ToyOutcome:
    finished: bool
    step: int
    stopped_by_signal: bool


@dataclass(frozen=True)
class CounterRun:
    """A step loop that checkpoints its counter to RUN_DIR/counter after every step and resumes from it.

    Like the real training loop it installs its own SIGTERM/SIGUSR2 handlers (replacing the job's), which only
    set the stop flag. RUN_DIR/starts gets one line per start: the step it resumed from and its pid.
    """

    run_dir: str
    steps: int
    step_s: float = 0.05

    def __call__(self) -> ToyOutcome:
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(sig, lambda *_: request_stop())
        run_dir = Path(self.run_dir)
        counter = run_dir / "counter"
        step = int(counter.read_text()) if counter.exists() else 0
        with open(run_dir / "starts", "a") as f:
            f.write(f"{step} {os.getpid()}\n")
        while step < self.steps and not _stop.is_set():
            time.sleep(self.step_s)
            step += 1
            tmp = run_dir / ".counter.tmp"
            tmp.write_text(str(step))
            os.replace(tmp, counter)
        return ToyOutcome(finished=step >= self.steps, step=step, stopped_by_signal=_stop.is_set())


def starts(run_dir: Path) -> list[tuple[int, int]]:
    """(resumed-from step, pid) of every start of a CounterRun."""
    path = run_dir / "starts"
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines()] if path.exists() else []


def counter(run_dir: Path) -> int:
    path = run_dir / "counter"
    return int(path.read_text()) if path.exists() else 0


@dataclass(frozen=True)
class AllReduceRun:
    """Joins the process group from the environment the job exported and all-reduces rank + 1."""

    run_dir: str

    def __call__(self) -> ToyOutcome:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo")
        total = torch.tensor([dist.get_rank() + 1.0])
        dist.all_reduce(total)
        record = {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
                  "local_rank": int(os.environ["LOCAL_RANK"]), "sum": total.item()}
        (Path(self.run_dir) / f"rank{record['rank']}.json").write_text(json.dumps(record))
        dist.barrier()
        dist.destroy_process_group()
        return ToyOutcome(finished=True, step=1, stopped_by_signal=False)


def cpu_threads() -> tuple[str | None, int]:
    """What a job was given (OMP_NUM_THREADS) and what torch took from it."""
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
