"""Is a Slurm cluster reachable from here? (The real one from ../shared/slurm/up.sh in CI.)"""
from __future__ import annotations

import functools
import shutil
import subprocess


@functools.cache
def slurm_unavailable_reason() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no sbatch/sinfo on PATH (start one with: eval \"$(../shared/slurm/up.sh)\")"
    try:
        subprocess.run(["sinfo", "-h"], check=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as e:
        return f"sinfo failed: {e}"
    return None
