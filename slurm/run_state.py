"""RUN_DIR/slurm/run_state.json: what the jobs of one run have done, so a restarted or resubmitted job knows
whether the run finished, at which world size it last started, and how often it requeued itself."""
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
    world_size: Optional[int] = None  # of the latest start (a job may come back with another: it resumes)
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
