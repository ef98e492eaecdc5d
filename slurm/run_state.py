"""RUN_DIR/slurm/run_state.json: what the jobs of one run have done, so a restarted or resubmitted job knows
whether the run finished, at which world size it started, and how often it requeued itself."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from slurm.errors import SlurmError
from slurm.jsonfile import read_json_object, write_json_atomic

FILE_NAME = "run_state.json"


@dataclass
class RunState:
    world_size: Optional[int] = None  # of the first job that started the run
    starts: int = 0  # job starts, restarts after a requeue included
    requeues: int = 0  # requeues the jobs asked for themselves (stop signal before the time limit)
    finished_step: Optional[int] = None  # set once training returned finished
    job_ids: list[str] = field(default_factory=list)


def path(run_dir: Path) -> Path:
    return Path(run_dir) / "slurm" / FILE_NAME


def read(run_dir: Path) -> RunState:
    file = path(run_dir)
    if not file.exists():
        return RunState()
    data = read_json_object(file, "a run state with keys " + ", ".join(f.name for f in dataclasses.fields(RunState)))
    try:
        return RunState(**data)
    except TypeError as e:
        raise SlurmError(f"{file}: {e}; delete the file only if no job of this run is queued") from None


def write(run_dir: Path, state: RunState) -> None:
    write_json_atomic(path(run_dir), dataclasses.asdict(state))


def check_world_size(run_dir: Path, world_size: int) -> None:
    """A run's data stream and checkpoints belong to one world size; refuse another one clearly."""
    started = read(run_dir).world_size
    if started is not None and started != world_size:
        raise SlurmError(f"{run_dir} was started with world size {started} (nodes x tasks per node); this job has "
                         f"{world_size}. A run cannot resume on another world size (its data stream cannot be "
                         f"remapped): use the original nodes and tasks per node, or a new run dir")
