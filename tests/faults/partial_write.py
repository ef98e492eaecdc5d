"""A torch.save that writes only half of one checkpoint, and a DCP shard writer that writes only the first tensor of
one sharded checkpoint's shard file, then fail the way the test chooses (a kill, a full disk)."""
from __future__ import annotations

import io
from typing import Any, BinaryIO, Callable

import torch
from torch.distributed.checkpoint import filesystem


def half_written_save(step: int, fail: Callable[[BinaryIO], None]) -> Callable[..., Any]:
    """torch.save, except that the checkpoint of `step` gets half its bytes written to `f`, then `fail(f)`."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("step") == step):
            return original(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:buffer.tell() // 2])
        fail(f)

    return save


def shard_write_failing_at(step: int, fail: Callable[[BinaryIO], None]) -> Callable[..., Any]:
    """DCP's `filesystem._write_item` (one tensor into a rank's shard file), except that in the sharded checkpoint of
    `step` (its step_N.dcp.partial/ directory) the first tensor is written, then `fail(f)`."""
    original = filesystem._write_item

    def write_item(transforms, stream, *args, **kwargs):
        result = original(transforms, stream, *args, **kwargs)
        if f"step_{step:06d}.dcp.partial" in str(getattr(stream, "name", "")):
            fail(stream)
        return result

    return write_item
