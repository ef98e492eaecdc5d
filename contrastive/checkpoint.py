"""Checkpoints in RUN_DIR/checkpoints/, in either of two formats, plus `latest`, the name of the newest complete one:

    step_XXXXXX.pt    one file, written by rank 0 (DDP runs, and what `contrastive checkpoint consolidate` makes)
    step_XXXXXX.dcp/  a sharded checkpoint, every rank writing its own shards (FSDP runs:
                      contrastive/sharded_checkpoint.py holds its files)

Both are written under a name no reader takes for a checkpoint and renamed only when complete: a file to a temp
file, fsynced, renamed; a sharded checkpoint into step_XXXXXX.dcp.partial/, renamed by rank 0 once every rank's files
are on disk, the run dir fsynced. `latest` is replaced the same way only afterwards, so a crash at any moment leaves
the previous `latest` loadable, and the next writer removes what a killed one left. The entries we write are only
tensors and plain Python values, so a single file loads with `torch.load(weights_only=True)` and never runs code (a
sharded checkpoint's DCP metadata is read with the same guarantee: sharded_checkpoint.py says how).

A write may go on in the background from a copy of the state (train.checkpoint_async): `wait` returns its outcome.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from contrastive import sharded_checkpoint
from contrastive.errors import CheckpointError
from contrastive.sharded_checkpoint import RUN_STATE
from data.atomic import AtomicFile, atomic_write_bytes, fsync_directory

SINGLE_FILE, SHARDED, PARTIAL = ".pt", ".dcp", ".partial"
STEP_NAME = re.compile(r"^step_(\d{6,})\.(pt|dcp)$")


class Checkpointer:
    """The checkpoints of one run dir. `sharded` chooses the format this one writes; it finds, names in `latest`,
    prunes (the last `keep` steps) and cleans up after both."""

    def __init__(self, run_dir: str | os.PathLike, keep: int = 3, sharded: bool = False,
                 collective_timeout_s: float = 1800):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep
        self.sharded = sharded
        self.collective_timeout_s = collective_timeout_s
        self._background: Optional[BackgroundWrite] = None
        self._group: Optional[dist.ProcessGroup] = None
        self._stager: Optional[DefaultStager] = None

    def path(self, step: int) -> Path:
        """Where this checkpointer writes the checkpoint of `step`."""
        return self.dir / f"step_{step:06d}{SHARDED if self.sharded else SINGLE_FILE}"

    def at(self, step: int) -> Optional[Path]:
        """The checkpoint of `step`, in either format; the single file where one was consolidated beside a sharded
        checkpoint (the same weights, read faster)."""
        for suffix in (SINGLE_FILE, SHARDED):
            path = self.dir / f"step_{step:06d}{suffix}"
            if path.exists():
                return path
        return None

    def save(self, step: int, state: dict[str, Any], background: bool = False) -> Path:
        """One file from this process (rank 0). Raises CheckpointError when the file system refuses the write (disk
        full, quota, I/O error): the temp file is gone and `latest` still names the previous complete checkpoint.
        `background`: written by a thread from a copy of `state` in CPU memory; `wait` gives the outcome."""
        path = self.dir / f"step_{step:06d}{SINGLE_FILE}"
        self._check_idle()
        if background:
            copy = self._snapshot(state)
            self._background = BackgroundWrite(path, lambda: self._write_single_file(path, copy))
        else:
            self._write_single_file(path, state)
        return path

    def save_sharded(self, step: int, state: dict[str, Any], run_state: dict[str, Any],
                     background: bool = False) -> Path:
        """A sharded checkpoint; every rank calls it with its shards of the model and optimizer (`state`:
        sharding.sharded_state), rank 0 with `run_state`, the other entries (plain data). Written into
        step_N.dcp.partial/ and renamed by rank 0 once every rank's files are on disk, then named in `latest`.
        Raises CheckpointError on every rank if a rank's write fails (on rank 0 alone if its own renaming does): the
        partial directory is removed, `latest` still names the previous checkpoint. `background`: written by a thread
        from a copy of `state` in CPU memory; `wait` gives the outcome."""
        final = self.dir / f"step_{step:06d}{SHARDED}"
        partial = final.with_name(final.name + PARTIAL)
        self._check_idle()
        group = self._sharded_write_group()
        refused = None
        if _is_main():
            try:
                self._remove_partial_writes()
                partial.mkdir(parents=True)
            except OSError as e:
                refused = str(e)
        if group is not None:  # no rank writes into the directory before rank 0 has made it afresh (or could not)
            shared = [refused]
            dist.broadcast_object_list(shared, src=0, group=group)
            refused = shared[0]
        if refused is not None:
            raise self._write_error(final, refused)
        if background:
            copy = self._snapshot(state)
            self._background = BackgroundWrite(final, lambda: self._write_sharded(final, partial, copy, run_state,
                                                                                  group))
        else:
            self._write_sharded(final, partial, state, run_state, group)
        return final

    def wait(self) -> Optional[str]:
        """Waits for the checkpoint being written in the background, if any: the message of its CheckpointError, or
        None when it was written (or there was none)."""
        background, self._background = self._background, None
        return background.wait() if background is not None else None

    @staticmethod
    def step_of(path: Path) -> int:
        """The step a checkpoint holds, from its name (without reading gigabytes)."""
        match = STEP_NAME.match(path.name)
        if match is None:
            raise CheckpointError(f"{path} is not named like a checkpoint (step_NNNNNN.pt or step_NNNNNN.dcp)")
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
        """The steps with a complete checkpoint, in either format or both."""
        if not self.dir.is_dir():
            return []
        return sorted({int(m.group(1)) for p in self.dir.iterdir() if (m := STEP_NAME.match(p.name))})

    def checkpoints(self) -> list[Path]:
        """One checkpoint per step (`at`), oldest first."""
        return [path for step in self.steps() if (path := self.at(step)) is not None]

    def _write_single_file(self, path: Path, state: dict[str, Any]) -> None:
        self._remove_partial_writes()
        try:
            write_single_file(path, state)
            self._name_latest(path)
        except OSError as e:
            raise self._write_error(path, str(e)) from e
        self._prune()

    def _write_sharded(self, final: Path, partial: Path, state: dict[str, Any], run_state: dict[str, Any],
                       group: Optional[dist.ProcessGroup]) -> None:
        try:
            sharded_checkpoint.write(partial, state, group)
            if _is_main():
                write_single_file(partial / RUN_STATE, run_state)  # fsyncs the directory too
                if final.exists():  # complete, but a killed run never named it in `latest`: this one replaces it
                    shutil.rmtree(final)
                os.replace(partial, final)
                fsync_directory(self.dir)  # the rename is on disk before `latest` names it
                self._name_latest(final)
        except (OSError, CheckpointError) as e:
            if _is_main():
                shutil.rmtree(partial, ignore_errors=True)
            raise self._write_error(final, str(e)) from e
        if _is_main():
            self._prune()

    def _name_latest(self, path: Path) -> None:
        atomic_write_bytes(self.dir / "latest", f"{path.name}\n".encode())

    def _write_error(self, path: Path, reason: str) -> CheckpointError:
        previous = self.latest()
        return CheckpointError(f"checkpoint {path} could not be written ({reason}); `latest` still names "
                               f"{previous.name if previous else 'no checkpoint'}")

    def _check_idle(self) -> None:
        if self._background is not None:
            raise RuntimeError(f"{self._background.path} is still being written in the background: wait() for it "
                               "before the next save")

    def _snapshot(self, state: dict[str, Any]) -> dict[str, Any]:
        """`state` copied to CPU memory, which training then no longer changes. DCP's stager: a sharded tensor stays
        sharded (its local shard copied), and the buffers of one copy are reused for the next copy of the same
        tensors, so no checkpoint allocates host memory again (the previous copy has been written by then)."""
        if self._stager is None:
            self._stager = DefaultStager(StagingOptions(use_pinned_memory=False, use_shared_memory=False,
                                                        use_async_staging=False, use_non_blocking_copy=False))
        return self._stager.stage(state)

    def _sharded_write_group(self) -> Optional[dist.ProcessGroup]:
        """Sharded writes coordinate over a gloo group of their own, made by every rank at the first one: a
        background write's collectives then never interleave with training's on the default group, and they run
        in host memory whatever the device. None in a single process."""
        if self._group is None and dist.is_initialized() and dist.get_world_size() > 1:
            self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.collective_timeout_s))
        return self._group

    def _remove_partial_writes(self) -> None:
        """What a killed writer left (one writer per run dir, rank 0): temp files of single files, partial
        directories of sharded checkpoints."""
        if not self.dir.is_dir():
            return
        for partial in self.dir.glob(".step_*.pt.*.tmp"):
            partial.unlink(missing_ok=True)
        for partial in self.dir.glob(f"step_*{SHARDED}{PARTIAL}"):
            shutil.rmtree(partial, ignore_errors=True)

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        for step in self.steps()[:-self.keep]:
            (self.dir / f"step_{step:06d}{SINGLE_FILE}").unlink(missing_ok=True)
            shutil.rmtree(self.dir / f"step_{step:06d}{SHARDED}", ignore_errors=True)


class BackgroundWrite:
    """One checkpoint written by a thread while training goes on. A daemon thread: a process that ends by an error
    or a second Ctrl-C does not wait for it, and what it leaves is a partial write the next writer removes."""

    def __init__(self, path: Path, write: Callable[[], Any]):
        self.path = path
        self.failure: Optional[str] = None
        self._thread = threading.Thread(target=self._run, args=(write,), name=f"write {path.name}", daemon=True)
        self._thread.start()

    def _run(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except CheckpointError as e:
            self.failure = str(e)
        except BaseException as e:  # reported at the next save like a refused write, not lost with the thread
            self.failure = f"checkpoint {self.path} could not be written ({type(e).__name__}: {e})"

    def wait(self) -> Optional[str]:
        self._thread.join()
        return self.failure


def write_single_file(path: Path, state: dict[str, Any]) -> None:
    """`state` as `path` (torch.save), atomically: a temp file, fsynced, renamed."""
    with AtomicFile(path) as out:
        torch.save(state, out.file)


def is_sharded_checkpoint(path: Path) -> bool:
    """A sharded checkpoint's directory: named step_N.dcp, or holding its run_state.pt (one copied elsewhere)."""
    return path.suffix == SHARDED or (path / RUN_STATE).is_file()


def is_checkpoint(path: Path) -> bool:
    """A checkpoint of either format (rather than a run dir)."""
    return path.is_file() or is_sharded_checkpoint(path)


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def consolidate(checkpoint: Path) -> Path:
    """A sharded checkpoint as the usual single file beside it (step_N.pt next to step_N.dcp/), written atomically:
    every entry, the model and optimizer whole (the optimizer keyed by parameter name, as under FSDP). `latest` is
    left as it is."""
    if not is_sharded_checkpoint(checkpoint):
        raise CheckpointError(f"{checkpoint} is a single file already: only a sharded checkpoint is consolidated")
    single = checkpoint.with_suffix(SINGLE_FILE) if checkpoint.suffix == SHARDED else Path(f"{checkpoint}{SINGLE_FILE}")
    write_single_file(single, load_checkpoint(checkpoint))
    return single


def load_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """The whole checkpoint; a sharded one gathered into this process (every tensor whole). `mmap`: a single file's
    tensors are read only when used."""
    path = Path(path)
    if is_sharded_checkpoint(path):
        return {**load_checkpoint_header(path), "model": sharded_checkpoint.read_whole(path, "model"),
                "optimizer": sharded_checkpoint.read_whole(path, "optimizer")}
    return _renamed(_load_file(path, mmap, "model"), *LEGACY_PREFIX)


def load_checkpoint_weights(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint without its optimizer state (what eval, export and init_from read); a sharded one's model
    gathered into this process."""
    path = Path(path)
    if is_sharded_checkpoint(path):
        return {**load_checkpoint_header(path), "model": sharded_checkpoint.read_whole(path, "model")}
    state = load_checkpoint(path, mmap)
    state.pop("optimizer", None)
    return state


def load_checkpoint_header(path: str | os.PathLike) -> dict[str, Any]:
    """Everything but the model and optimizer (step, world size, data-stream and RNG states, config, tokenizer,
    imported_from), without reading the weights."""
    path = Path(path)
    if is_sharded_checkpoint(path):
        sharded_checkpoint.check_complete(path)
        return _load_file(path / RUN_STATE, mmap=False, required="step")
    state = _load_file(path, mmap=True, required="model")
    return {key: value for key, value in state.items() if key not in ("model", "optimizer")}


def _load_file(path: Path, mmap: bool, required: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for truncated files and refused pickles
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(state, dict) or required not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint (no {required}/step entries)")
    return state


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
