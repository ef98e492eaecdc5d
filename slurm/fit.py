"""Does a request fit where it is going? Checked before anything is submitted, so a request the target cannot
serve fails with the slurm.* key to change, not as sbatch's "Invalid generic resource (gres) specification" or
as a --local job that starts one process per GPU the machine does not have.

On Slurm the partition's nodes are read from sinfo, one line per kind of node (--exact: not merged into
"64+"; --all: hidden partitions too), e.g. `gpu* 16 128 1031000 gpu:h100:8(S:0-1)` or `debug 1 2 21694 (null)`.
Only what sinfo reports is checked (GPUs, CPUs and memory per node, node count); constraint, exclude and
partition limits are left to sbatch, so the check refuses only what no node of the partition could run.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import torch

from slurm.errors import SlurmError
from slurm.resources import Resources

SINFO = ["sinfo", "--all", "--exact", "--noheader", "--format=%P %D %c %m %G"]


@dataclass(frozen=True)
class NodeKind:
    """Nodes of one partition that sinfo reports alike: one line of its output."""
    partition: str
    default: bool  # sinfo marks the default partition with '*'
    count: int
    cpus: int
    mem_mb: int
    gpus: int
    gres: str  # as sinfo prints it; "none" for its "(null)"


def fit_to_target(resources: Resources, *, local: bool) -> Resources:
    """`resources` as they can run where they are going, or SlurmError naming the slurm.* key that does not fit.

    local: on a machine without GPUs the GPU request is dropped (one CPU process, unless tasks_per_node says
    otherwise), with a note on stderr; with GPUs, gpus_per_node must not exceed them. Slurm: checked against
    the nodes sinfo reports for the partition, and returned unchanged; without a working sinfo, not checked.
    """
    if local:
        return _fit_local(resources, torch.cuda.device_count())
    kinds = cluster_nodes()
    if kinds:
        check_partition(resources, kinds)
    return resources


def _fit_local(resources: Resources, gpus_here: int) -> Resources:
    if resources.gpus_per_node == 0:
        return resources
    if gpus_here == 0:
        cpu_only = dataclasses.replace(resources, gpus_per_node=0)
        processes = "1 CPU process" if cpu_only.tasks == 1 else f"{cpu_only.tasks} CPU processes"
        print(f"note: this machine has no GPU, so --local runs {processes} "
              f"(slurm.gpus_per_node={resources.gpus_per_node} ignored)", file=sys.stderr)
        return cpu_only
    if resources.gpus_per_node > gpus_here:
        raise SlurmError(f"slurm.gpus_per_node={resources.gpus_per_node} but this machine has {gpus_here} GPU(s); "
                         f"set slurm.gpus_per_node={gpus_here} or less for --local")
    return resources


def cluster_nodes() -> list[NodeKind]:
    """What sinfo reports; [] when it cannot be asked (then sbatch has the last word)."""
    try:
        out = subprocess.run(SINFO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_sinfo(out.stdout) if out.returncode == 0 else []


def parse_sinfo(text: str) -> list[NodeKind]:
    kinds = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 5:
            continue
        partition, count, cpus, mem_mb, gres = fields
        kinds.append(NodeKind(partition.rstrip("*"), partition.endswith("*"), _number(count), _number(cpus),
                              _number(mem_mb), gpu_count(gres), "none" if gres == "(null)" else gres))
    return kinds


def _number(field: str) -> int:
    """sinfo's 64, or 64+ (the least of several nodes); anything else (n/a) as 0."""
    digits = field.rstrip("+")
    return int(digits) if digits.isdigit() else 0


def gpu_count(gres: str) -> int:
    """GPUs per node in sinfo's gres field: gpu:8, gpu:h100:8(S:0-1), gpu:a100:2,gpu:v100:2, (null)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        name, *rest = item.split(":")
        if name == "gpu":
            total += int(rest[-1]) if rest and rest[-1].isdigit() else 1  # a bare `gpu` or `gpu:TYPE` is one
    return total


def check_partition(resources: Resources, kinds: list[NodeKind]) -> None:
    """SlurmError unless the request fits the nodes of its partition (or of one of them, for a list)."""
    names = list(dict.fromkeys(kind.partition for kind in kinds))
    if resources.partition:
        asked, named_by = resources.partition, f"slurm.partition={resources.partition}"
    elif os.environ.get("SBATCH_PARTITION"):  # sbatch's choice when the command line names none
        asked = os.environ["SBATCH_PARTITION"]
        named_by = f"SBATCH_PARTITION={asked} (slurm.partition is unset)"
    else:
        defaults = [kind.partition for kind in kinds if kind.default]
        if not defaults:
            return  # sbatch says that a partition must be named
        asked, named_by = defaults[0], ""
    partitions = asked.split(",")
    unknown = [p for p in partitions if p not in names]
    if unknown:
        raise SlurmError(f"{named_by} but this cluster has no partition {', '.join(unknown)}; "
                         f"partitions: {', '.join(names)}")
    misfits = [_misfit(resources, p, [kind for kind in kinds if kind.partition == p]) for p in partitions]
    if all(misfits):
        raise SlurmError(misfits[0])


def _misfit(r: Resources, partition: str, kinds: list[NodeKind]) -> str:
    """Why `r` does not fit the nodes of `partition`, naming the key at fault; "" when it fits."""
    total = sum(kind.count for kind in kinds)
    if r.nodes > total:
        return f"slurm.nodes={r.nodes} but partition {partition} has {total} node(s)"
    most_gpus = max(kind.gpus for kind in kinds)
    if r.gpus_per_node > most_gpus:
        gres = ", ".join(dict.fromkeys(kind.gres for kind in kinds))
        if most_gpus == 0:
            return (f"slurm.gpus_per_node={r.gpus_per_node} but no node of partition {partition} has GPUs "
                    f"(gres: {gres}); set slurm.gpus_per_node=0 for CPU nodes")
        return (f"slurm.gpus_per_node={r.gpus_per_node} but nodes of partition {partition} have at most "
                f"{most_gpus} GPUs (gres: {gres})")
    cpus = r.cpus_per_task * r.tasks
    most_cpus = max(kind.cpus for kind in kinds)
    if cpus > most_cpus:
        one_per_gpu = " (one per GPU)" if r.tasks_per_node is None else ""
        per_task = "" if r.tasks == 1 else f" x {r.tasks} tasks per node{one_per_gpu} = {cpus} CPUs"
        return (f"slurm.cpus_per_task={r.cpus_per_task}{per_task} but nodes of partition {partition} have at most "
                f"{most_cpus} CPUs")
    most_mem_mb = max(kind.mem_mb for kind in kinds)
    if r.mem_gb * 1024 > most_mem_mb:  # sbatch's --mem=NGB: G is 1024 MB
        return (f"slurm.mem_gb={r.mem_gb} but nodes of partition {partition} have at most {most_mem_mb // 1024} GB "
                f"({most_mem_mb} MB)")
    fitting = sum(kind.count for kind in kinds
                  if kind.gpus >= r.gpus_per_node and kind.cpus >= cpus and kind.mem_mb >= r.mem_gb * 1024)
    if r.nodes > fitting:  # each need is met by some node, but not by enough nodes at once
        wanted = ", ".join(part for part in (f"{r.gpus_per_node} GPUs" if r.gpus_per_node else "", f"{cpus} CPUs",
                                             f"{r.mem_gb} GB" if r.mem_gb else "") if part)
        return f"slurm.nodes={r.nodes} but {fitting} of the {total} nodes of partition {partition} offer {wanted}"
    return ""

