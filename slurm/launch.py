"""Submit callables as jobs: on Slurm several become one job array; each job's logs land in its own run dir.

On Slurm, job J's submitit files (stdout/stderr of every task, pickles) live in LOG_DIR/J/. An array's
files are written under one folder (ARRAY_FOLDER/J/, submitit knows a single folder per executor) and
every run dir gets a relative symlink LOG_DIR/J -> that folder, so `RUN_DIR/slurm/` lists the jobs of that
run. Local jobs write into LOG_DIR itself, their files named by process id (submitit's local executor
would leave an empty literal `%j` directory behind a per-job folder).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import submitit
from submitit.core.utils import FailedJobError

from slurm.errors import SlurmError
from slurm.executor import make_executor
from slurm.resources import Resources


def submit(fns: Sequence[Callable[[], Any]], log_dirs: Sequence[Path], resources: Resources, *, local: bool,
           job_name: str, array_folder: Optional[Path] = None) -> list[submitit.Job]:
    """One job per callable (all with the same resources); fns[i]'s logs go to log_dirs[i] (see above).

    On Slurm, several callables form one job array whose files are kept in `array_folder` (default:
    log_dirs[0]). Locally (`local=True`) each callable is its own process; there are no arrays.
    """
    if len(fns) != len(log_dirs) or not fns:
        raise ValueError(f"need one log dir per callable, got {len(fns)} callables and {len(log_dirs)} log dirs")
    for log_dir in log_dirs:
        log_dir.mkdir(parents=True, exist_ok=True)
    if local:
        with local_thread_share(len(fns) * resources.tasks):
            return [make_executor(resources, log_dir, local=True, job_name=job_name).submit(fn)
                    for fn, log_dir in zip(fns, log_dirs)]
    folder = (array_folder or log_dirs[0]).absolute()
    executor = make_executor(resources, folder / "%j", local=False, job_name=job_name)
    submitit_stderr = io.StringIO()  # submitit prints sbatch's error before raising it: said once, by the SlurmError
    try:
        with contextlib.redirect_stderr(submitit_stderr):
            jobs = executor.submit_array(list(fns))
    except FailedJobError as e:
        raise SlurmError(refusal_message(str(e), resources)) from None
    sys.stderr.write(submitit_stderr.getvalue())
    for job, log_dir in zip(jobs, log_dirs):
        link = log_dir.absolute() / job.job_id
        if link != job.paths.folder:
            link.symlink_to(os.path.relpath(job.paths.folder, log_dir.absolute()))
    return jobs


def local_threads(processes: int) -> int:
    """CPU threads for each of `processes` processes that run at once on this machine: its cores shared out, at
    least one each (torchrun gives its workers one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes)


@contextlib.contextmanager
def local_thread_share(processes: int) -> Iterator[None]:
    """Local jobs start with OMP_NUM_THREADS set to their share of the cores (submitit's local executor hands each
    job os.environ as it is at submission): torch would otherwise give every process a thread per core, and three
    jobs on two cores would each run at about half speed. An OMP_NUM_THREADS set by the caller is kept."""
    if processes == 1 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    threads = local_threads(processes)
    print(f"{processes} local processes at once: OMP_NUM_THREADS={threads} each (set OMP_NUM_THREADS to choose)",
          flush=True)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


def refusal_message(sbatch_stderr: str, resources: Resources) -> str:
    """sbatch's error lines as one line; a gres refusal names the key that asked for the GPUs."""
    reasons = [line.strip().removeprefix("sbatch: error: ") for line in sbatch_stderr.splitlines() if line.strip()]
    message = f"sbatch refused the job: {'; '.join(reasons) or 'no reason given'}"
    if resources.gpus_per_node and re.search(r"\bgres\b", sbatch_stderr, re.IGNORECASE):
        message += (f" (slurm.gpus_per_node={resources.gpus_per_node} asks for GPUs that the partition's nodes do not "
                    "have; set slurm.gpus_per_node=0 for CPU nodes)")
    return message


def final_results(job: submitit.Job, poll_s: float = 2.0) -> list[Any]:
    """Every task's result once the job has left the queue for good.

    A job that requeues itself passes through a state submitit takes for final (its step is cancelled for
    the requeue and sacct says FAILED for a moment), and submitit never looks again; so on Slurm this waits
    until squeue no longer lists the job before asking for the results.
    """
    if isinstance(job, submitit.SlurmJob):
        while queue_state(job.job_id):
            time.sleep(poll_s)
    return job.results()


def queue_state(job_id: str, retries: int = 30, retry_s: float = 2.0) -> str:
    """The job's state as squeue shows it now (PENDING, RUNNING, COMPLETING, ...), '' once it has left the queue.

    squeue fails now and then while the controller is busy (a socket timeout, no output); that is retried, so ''
    always means gone and never a failed look. A job id the controller no longer knows is gone too.
    """
    for _ in range(retries):
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
        if "Invalid job id" in out.stderr:
            return ""
        time.sleep(retry_s)
    raise SlurmError(f"squeue could not report job {job_id} in {retries} tries: {out.stderr.strip()}")
