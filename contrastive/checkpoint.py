"""Checkpoints in RUN_DIR/checkpoints/: step_XXXXXX.pt files plus `latest`, the name of the newest complete one.

A checkpoint is written to a temp file, fsynced, renamed; `latest` is replaced the same way only
afterwards, so a crash at any moment leaves the previous `latest` loadable. Files hold only tensors and
plain Python values, so they load with `torch.load(weights_only=True)` and never run code.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from contrastive.errors import CheckpointError
from data.atomic import AtomicFile, atomic_write_bytes

STEP_FILE = re.compile(r"^step_(\d{6,})\.pt$")


class Checkpointer:
    def __init__(self, run_dir: str | os.PathLike, keep: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.dir / f"step_{step:06d}.pt"

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Raises CheckpointError when the file system refuses the write (disk full, quota, I/O error): the temp
        file is gone and `latest` still names the previous complete checkpoint."""
        path = self.path(step)
        self._remove_partial_writes()
        try:
            with AtomicFile(path) as out:
                torch.save(state, out.file)
            atomic_write_bytes(self.dir / "latest", f"{path.name}\n".encode())
        except OSError as e:
            previous = self.latest()
            raise CheckpointError(f"checkpoint {path} could not be written ({e}); `latest` still names "
                                  f"{previous.name if previous else 'no checkpoint'}") from e
        self._prune()
        return path

    @staticmethod
    def step_of(path: Path) -> int:
        """The step a checkpoint file holds, from its name (without reading a file of gigabytes)."""
        match = STEP_FILE.match(path.name)
        if match is None:
            raise CheckpointError(f"{path} is not named like a checkpoint (step_NNNNNN.pt)")
        return int(match.group(1))

    def latest(self) -> Path | None:
        marker = self.dir / "latest"
        if not marker.exists():
            return None
        path = self.dir / marker.read_text().strip()
        if not path.exists():
            raise CheckpointError(f"{marker} names {path.name}, which does not exist")
        return path

    def steps(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := STEP_FILE.match(p.name)))

    def _remove_partial_writes(self) -> None:
        """Temp files a killed process left mid-write (one writer per run dir: rank 0)."""
        if self.dir.is_dir():
            for partial in self.dir.glob(".step_*.pt.*.tmp"):
                partial.unlink(missing_ok=True)

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        for step in self.steps()[:-self.keep]:
            self.path(step).unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """`mmap`: tensors are read from the file only when used (what reads just the config and tokenizer wants)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for truncated files and refused pickles
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint (no model/step entries)")
    return _renamed(state, *LEGACY_PREFIX)


# Checkpoints written while the image tower was a ViT named `vit` (now `trunk`, whatever timm model it is).
LEGACY_PREFIX = ("image_tower.vit.", "image_tower.trunk.")


def _renamed(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """Parameter names starting with `old` start with `new`: in the model entries, and in the optimizer state
    where it is keyed by name (FSDP's)."""
    def rename(name: Any) -> Any:
        return new + name[len(old):] if isinstance(name, str) and name.startswith(old) else name

    state["model"] = {rename(k): v for k, v in state["model"].items()}
    optimizer = state.get("optimizer")
    if isinstance(optimizer, dict) and "state" in optimizer:
        optimizer["state"] = {rename(k): v for k, v in optimizer["state"].items()}
        for group in optimizer.get("param_groups", []):
            group["params"] = [rename(p) for p in group["params"]]
    return state
