"""A submitit executor from Resources: SlurmExecutor on a cluster, LocalExecutor (`--local`) on any machine."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import submitit

from slurm.errors import SlurmError
from slurm.resources import Resources


def slurm_unavailable_reason() -> Optional[str]:
    """None when sbatch can reach a controller, else why not."""
    missing = [tool for tool in ("sbatch", "srun", "sinfo") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found on PATH"
    try:
        subprocess.run(["sinfo", "-h"], check=True, capture_output=True, timeout=30)
    except subprocess.CalledProcessError as e:
        return f"sinfo failed: {e.stderr.decode(errors='replace').strip()}"
    except (subprocess.TimeoutExpired, OSError) as e:
        return f"sinfo failed: {e}"
    return None


def sbatch_parameters(resources: Resources, job_name: str) -> dict[str, Any]:
    """SlurmExecutor.update_parameters arguments; unset options are left to the cluster's defaults."""
    r = resources
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": r.timeout_min,
        "nodes": r.nodes,
        "ntasks_per_node": r.tasks,
        "cpus_per_task": r.cpus_per_task,
        "signal_delay_s": r.signal_delay_s,
        "array_parallelism": r.array_parallelism,
        "partition": r.partition,
        "account": r.account,
        "qos": r.qos,
        "constraint": r.constraint,
        "exclude": r.exclude,
        "comment": r.comment,
        "gpus_per_node": r.gpus_per_node or None,
        "mem": f"{r.mem_gb}GB" if r.mem_gb else None,
        "additional_parameters": dict(r.extra) or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def make_executor(resources: Resources, folder: Path, *, local: bool, job_name: str) -> submitit.Executor:
    """submitit keeps each job's pickles and logs in `folder` (which may contain %j, the job id)."""
    if local:
        if resources.nodes != 1:
            raise SlurmError(f"--local runs on this machine only, so nodes must be 1 (got nodes={resources.nodes})")
        executor = submitit.LocalExecutor(folder, max_num_timeout=resources.max_requeues)
        executor.update_parameters(timeout_min=resources.timeout_min, tasks_per_node=resources.tasks,
                                   gpus_per_node=resources.gpus_per_node, signal_delay_s=resources.signal_delay_s)
        return executor
    reason = slurm_unavailable_reason()
    if reason is not None:
        raise SlurmError(f"no Slurm cluster reachable from here ({reason}); "
                         "pass --local to run the job on this machine with submitit's local executor")
    executor = submitit.SlurmExecutor(folder, max_num_timeout=resources.max_requeues)
    executor.update_parameters(**sbatch_parameters(resources, job_name))
    return executor
