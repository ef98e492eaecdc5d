"""A torch.save that writes only half of one checkpoint, then fails the way the test chooses (a kill, a full disk)."""
from __future__ import annotations

import io
from typing import Any, BinaryIO, Callable

import torch


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
