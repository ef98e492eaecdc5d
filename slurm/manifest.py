"""SWEEP_DIR/manifest.json: what one sweep submitted (the base config and overrides, the axes, and per point its
run dir, overrides and job id). Run dirs are stored relative to the sweep dir, so the sweep can be moved."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from slurm.errors import SlurmError
from slurm.jsonfile import read_json_object, write_json_atomic

FILE_NAME = "manifest.json"


@dataclass(frozen=True)
class SweepPoint:
    run_dir: str  # relative to the sweep dir
    overrides: list[str]
    job_id: str


@dataclass(frozen=True)
class Manifest:
    created: str  # ISO 8601, local time
    config: Optional[str]  # the named config or YAML path the sweep started from
    overrides: list[str]  # applied to every point before its own overrides
    axes: dict[str, list[str]]
    local: bool  # submitted with --local (job ids are process ids)
    points: list[SweepPoint] = field(default_factory=list)

    def write(self, sweep_dir: Path) -> Path:
        path = Path(sweep_dir) / FILE_NAME
        write_json_atomic(path, dataclasses.asdict(self))
        return path

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        data = read_json_object(path, "a sweep manifest")
        try:
            points = [SweepPoint(**p) for p in data.pop("points")]
            return cls(**data, points=points)
        except (KeyError, TypeError) as e:
            raise SlurmError(f"{path} is not a sweep manifest ({e}); expected keys "
                             f"{', '.join(f.name for f in dataclasses.fields(cls))}") from None

    def run_dirs(self, sweep_dir: Path) -> list[Path]:
        return [Path(sweep_dir) / p.run_dir for p in self.points]
