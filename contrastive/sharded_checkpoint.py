"""The files of a sharded checkpoint (FSDP runs, train.strategy=fsdp): a torch.distributed.checkpoint (DCP) directory
in which every rank writes its own shards of the model and optimizer, read back at any world size (DCP reads each
rank's part of every tensor from whichever shards hold it) or whole into one process, without a process group or a
GPU (eval, export, model.init_from, `contrastive checkpoint consolidate`).

    step_000004.dcp/__0_0.distcp, __1_0.distcp, ...  each rank's shards (one file per rank)
    step_000004.dcp/.metadata                        DCP's index of them: names, shapes, which file holds which bytes
    step_000004.dcp/run_state.pt                     rank 0's: step, world size, every rank's data-stream and RNG
                                                     state, config, tokenizer

Where the checkpoint lives, how it is made atomic and named in `latest`: contrastive/checkpoint.py.

The per-rank stream and RNG states are not DCP entries but rank 0's small run_state.pt: they are gathered onto rank 0
anyway (a resume at another world size needs every rank's, not one rank's own), they stay plain data that
torch.load(weights_only=True) reads, and eval and export read the config and tokenizer from it without DCP.

What needs pickle: DCP itself pickles its .metadata (dataclasses of names, shapes and offsets) and the non-tensor
values of the state (the optimizer's hyperparameters), and its own reader loads them with pickle.load and
torch.load(weights_only=False), so a crafted checkpoint could run code there. Here neither is read that way: the
metadata goes through an unpickler that builds only DCP's metadata classes, torch.Size, dtypes and layouts, the values
through torch.load(weights_only=True); DCP reads the tensors with weights_only=True itself.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.planner import ReadItem

from contrastive.errors import CheckpointError

METADATA = ".metadata"
RUN_STATE = "run_state.pt"

# Every global a DCP .metadata pickle refers to (torch 2.14): its dataclasses, and how torch pickles sizes, dtypes,
# layouts and the checkpoint's path. A pickle that runs code needs some other callable.
METADATA_GLOBALS = {
    *(("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata", "ChunkStorageMetadata",
        "BytesStorageMetadata", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
}


def write(directory: Path, state: dict[str, Any], group: Optional[dist.ProcessGroup]) -> None:
    """Every rank's shards of `state` into `directory` (which exists), and DCP's .metadata from rank 0, every file
    fsynced. A collective over `group` (None: this process alone): it returns on every rank once every rank's files
    are written, or raises CheckpointError with each failed rank's error on every rank."""
    try:
        with _alone() if group is None else contextlib.nullcontext():
            dcp.save(state, storage_writer=FileSystemWriter(directory, sync_files=True), process_group=group,
                     no_dist=group is None)
    except (OSError, CheckpointException) as e:
        raise CheckpointError(failure_text(e)) from e


def load_into(directory: Path, state: dict[str, Any]) -> None:
    """Fills `state` (state dicts at this run's world size: DTensors of this rank's shards, or whole tensors) from a
    sharded checkpoint written at any world size. A collective over the default group, when there is one."""
    check_complete(directory)
    alone = not dist.is_initialized()
    with _reading_errors(directory), _alone() if alone else contextlib.nullcontext():
        dcp.load(state, storage_reader=_MetadataSafeReader(directory), planner=_PlainDataLoadPlanner(), no_dist=alone)


def read_whole(directory: Path, part: str) -> dict[str, Any]:
    """The `part` ("model" or "optimizer") of a sharded checkpoint with every tensor whole, read in this process
    alone (also on one rank of a running group)."""
    metadata = check_complete(directory)
    target: dict[str, Any] = {}
    for key, item in metadata.state_dict_metadata.items():
        where = (metadata.planner_data or {}).get(key, (key,))
        if where[0] == part:
            _put(target, where, torch.empty(item.size, dtype=item.properties.dtype)
                 if isinstance(item, TensorStorageMetadata) else None)
    if part not in target:
        raise CheckpointError(f"checkpoint {directory} holds no {part} entries")
    with _reading_errors(directory), _alone():
        dcp.load(target, storage_reader=_MetadataSafeReader(directory), planner=_PlainDataLoadPlanner(), no_dist=True)
    return target[part]


def check_complete(directory: Path) -> Metadata:
    """DCP's metadata of `directory`; a missing file, or a shard file shorter than the metadata says, is one
    CheckpointError naming that file."""
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} does not exist")
    for name in (METADATA, RUN_STATE):
        if not (directory / name).is_file():
            raise CheckpointError(f"checkpoint {directory} is incomplete: {directory / name} is missing")
    metadata = read_metadata(directory)
    needed: dict[str, int] = {}
    for stored in metadata.storage_data.values():
        needed[stored.relative_path] = max(needed.get(stored.relative_path, 0), stored.offset + stored.length)
    for name, size in sorted(needed.items()):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory} is incomplete: its shard file {path} is missing")
        if path.stat().st_size < size:
            raise CheckpointError(f"checkpoint {directory} is incomplete: its shard file {path} is truncated "
                                  f"({path.stat().st_size} bytes; the metadata places data up to byte {size})")
    return metadata


def read_metadata(directory: Path) -> Metadata:
    path = directory / METADATA
    try:
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except Exception as e:  # pickle raises several types for truncated and refused files
        raise CheckpointError(f"checkpoint {directory}: {path} cannot be loaded: {type(e).__name__}: "
                              f"{_first_line(e)}") from e
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"checkpoint {directory}: {path} is not DCP metadata (it holds a "
                              f"{type(metadata).__name__})")
    return metadata


def failure_text(error: BaseException) -> str:
    """What went wrong, in one line; for DCP's CheckpointException each failed rank's error
    (`rank 1: [Errno 28] No space left on device`), the rank left out in a single process."""
    if not isinstance(error, CheckpointException):
        return _first_line(error)
    several = dist.is_initialized() and dist.get_world_size() > 1
    return "; ".join(f"rank {rank}: {_first_line(failure)}" if several else _first_line(failure)
                     for rank, (failure, _) in sorted(error.failures.items()))


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in METADATA_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                    torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of DCP metadata (refused: it could run code)")


class _MetadataSafeReader(FileSystemReader):
    """DCP's file reader with the metadata read by the restricted unpickler (DCP's own uses pickle.load)."""

    def read_metadata(self) -> Metadata:  # no rank-local fallback: every checkpoint here has a global .metadata
        metadata = read_metadata(Path(self.path))
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _PlainDataLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner, except that a non-tensor value must load with torch.load(weights_only=True)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        torch.load(value, weights_only=True)  # raises for anything beyond plain data, before DCP's own load
        value.seek(0)
        super().load_bytes(read_item, value)  # the same bytes, which now hold only what weights_only allows


def _put(target: dict[str, Any], where: tuple, value: Any) -> None:
    """target[where[0]][where[1]]... = value, making the dicts (and lists, for integer keys) on the way."""
    container: Any = target
    for key, following in zip(where, where[1:]):
        child = _get(container, key)
        if child is None:
            child = [] if isinstance(following, int) else {}
            _set(container, key, child)
        container = child
    _set(container, where[-1], value)


def _get(container: dict | list, key: Any) -> Any:
    if isinstance(container, list):
        return container[key] if key < len(container) else None
    return container.get(key)


def _set(container: dict | list, key: Any, value: Any) -> None:
    if isinstance(container, list):
        container.extend([None] * (key + 1 - len(container)))
    container[key] = value


@contextlib.contextmanager
def _reading_errors(directory: Path) -> Iterator[None]:
    try:
        yield
    except (Exception, CheckpointException) as e:
        raise CheckpointError(f"checkpoint {directory} cannot be loaded: {failure_text(e)}") from e


@contextlib.contextmanager
def _alone() -> Iterator[None]:
    """DCP warns at every call without a process group that it assumes a single process: that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*assuming the intent is to (save|load) in a single process")
        yield


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
