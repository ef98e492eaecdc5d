"""Sweeps: each `--sweep key=v1,v2,...` is an axis; their cartesian product is the list of runs, one run dir
per point, named from its overrides (`loss.name=siglip`, `loss.name=siglip,optim.lr=0.001`)."""
from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
from pathlib import Path

from slurm.errors import SlurmError


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]


def parse_axis(spec: str) -> Axis:
    """`key=v1,v2`; commas inside brackets belong to the value (`optim.betas=[0.9,0.98],[0.9,0.95]`)."""
    key, sep, raw = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SlurmError(f"--sweep {spec!r} is not of the form key=v1,v2,... (e.g. --sweep loss.name=clip,siglip)")
    values = tuple(v.strip() for v in _split_top_level_commas(raw))
    if any(not v for v in values):
        raise SlurmError(f"--sweep {spec!r} has an empty value; write key=v1,v2,... without empty items")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise SlurmError(f"--sweep {spec!r} repeats {', '.join(duplicates)}; each value makes one run")
    return Axis(key, values)


def parse_axes(specs: list[str]) -> list[Axis]:
    axes = [parse_axis(spec) for spec in specs]
    keys = [axis.key for axis in axes]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise SlurmError(f"--sweep names {', '.join(repeated)} more than once; give all its values in one --sweep")
    return axes


def points(axes: list[Axis]) -> list[list[str]]:
    """The overrides of every point of the grid, first axis varying slowest."""
    return [[f"{axis.key}={value}" for axis, value in zip(axes, combo)]
            for combo in itertools.product(*(axis.values for axis in axes))]


def point_name(overrides: list[str]) -> str:
    """The run dir name of one point; '/' in a value (a path) would nest directories, so it becomes '%'."""
    return ",".join(overrides).replace("/", "%")


def new_sweep_dir(parent: Path, now: datetime.datetime) -> Path:
    """PARENT/sweep-YYYYMMDD-HHMM, created here; a second sweep in the same minute gets a -2, -3, ... suffix."""
    parent.mkdir(parents=True, exist_ok=True)
    stem = f"sweep-{now:%Y%m%d-%H%M}"
    for attempt in itertools.count(1):
        path = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _split_top_level_commas(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        depth += char in "[({"
        depth -= char in "])}"
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
