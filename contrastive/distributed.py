"""The process group: initialised from torchrun's (or submitit's exported) environment variables."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available")
        # A cluster that binds one GPU per task shows each task a single device.
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto", timeout_s: float = 1800) -> DistEnv:
    """Join the process group named by RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT.

    Without WORLD_SIZE (or WORLD_SIZE=1) this is a single process and no group is created.
    Collectives time out after `timeout_s`, so a dead rank ends the others with an error, not a hang.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set "
                               "(launch with torchrun, srun via `contrastive submit`, or set them)")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_gather_objects(obj: object) -> list[object]:
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Mean of every gradient over ranks, flattened into one buffer per dtype (the accumulation path's DDP)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    for dtype in {g.dtype for g in grads}:
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for g in group:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


class StopVote:
    """Whether some rank was asked to stop, agreed on by every rank at the same step without making a step wait: each
    step's flags are summed over the ranks asynchronously, and the sum is read at the next step, so a stop takes
    effect one step after it is asked for. The vote travels over a gloo group in host memory (a numpy buffer, not a
    device tensor), so reading it waits for no GPU. A single process reads its own flag at once."""

    def __init__(self, timeout_s: float):
        several = dist.is_initialized() and dist.get_world_size() > 1
        self._group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s)) if several else None
        self._votes = np.zeros(1, dtype=np.float32)
        self._pending: Optional[dist.Work] = None

    def agreed(self, asked: bool) -> bool:
        """Cast this step's vote; True if some rank asked at the previous step (or now, in a single process)."""
        if self._group is None:
            return asked
        stop = self._collect()
        self._votes[0] = float(asked)
        self._pending = dist.all_reduce(torch.from_numpy(self._votes), group=self._group, async_op=True)
        return stop

    def close(self) -> None:
        """Wait for the last vote, which every rank cast, so that no collective is left running."""
        self._collect()

    def _collect(self) -> bool:
        if self._pending is None:
            return False
        self._pending.wait()
        self._pending = None
        return bool(self._votes[0] > 0)
