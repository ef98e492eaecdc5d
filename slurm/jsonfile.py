"""JSON files other processes read (manifests, run state): written atomically, read with errors naming the file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from slurm.errors import SlurmError


def write_json_atomic(path: Path, data: Any) -> None:
    """Temp file in the same directory, fsync, os.replace, then fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these records are read by other users of a shared cluster
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`, or a SlurmError naming the file and what it should have held."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SlurmError(f"{path} is not valid JSON ({e}); expected {what}") from None
    if not isinstance(data, dict):
        raise SlurmError(f"{path} holds a JSON {type(data).__name__}; expected {what} (an object)")
    return data
