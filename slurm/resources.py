"""What a job asks Slurm for. The fields mirror the `slurm.*` config section, passed in as a plain mapping
(slurm/ never imports the application's config)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from slurm.errors import SlurmError


@dataclass(frozen=True)
class Resources:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: Optional[int] = None  # None: one task (process) per GPU, one task without GPUs
    cpus_per_task: int = 1
    mem_gb: int = 0  # 0: the cluster's default
    timeout_min: int = 60
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    comment: Optional[str] = None
    signal_delay_s: int = 120  # USR2 this long before the time limit
    array_parallelism: int = 64
    max_requeues: int = 10
    extra: dict[str, str] = field(default_factory=dict)  # further sbatch parameters, e.g. {"mail-type": "END"}

    def __post_init__(self) -> None:
        for name in ("nodes", "cpus_per_task", "timeout_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise SlurmError(f"{name}={getattr(self, name)} must be at least 1")
        if self.tasks < 1:
            raise SlurmError(f"tasks_per_node={self.tasks_per_node} must be at least 1")
        if not 0 <= self.signal_delay_s < 60 * self.timeout_min:
            raise SlurmError(f"signal_delay_s={self.signal_delay_s} must be below the time limit "
                             f"(timeout_min={self.timeout_min}, {60 * self.timeout_min} s), or the job is "
                             "warned before it starts")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Resources":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SlurmError(f"unknown Slurm resource field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    @property
    def tasks(self) -> int:
        """Tasks per node."""
        return self.tasks_per_node if self.tasks_per_node is not None else max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks
