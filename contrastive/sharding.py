"""How the model is spread over ranks: `train.strategy=ddp` (replicated, gradients all-reduced) or `fsdp`
(FSDP2, `torch.distributed.fsdp.fully_shard`: parameters, gradients and optimizer state sharded).

FSDP shards each block of both towers (of the image tower, whatever timm model it is, its repeated blocks), the
loss's scorer parameters (Llip's; the loss is called outside the model's forward, so it needs its own unit to be
gathered for its call) and then the rest of the model (embeddings, final norms, projections). The loss's scalar
temperature and bias stay replicated. An FSDP run's checkpoints are sharded (contrastive/sharded_checkpoint.py):
each rank writes its own shards of `sharded_state`, nothing is gathered, and `restore_state` reads them back at any
world size. Their model entries have the same names as under DDP, so `contrastive eval` loads them into a plain
model; the optimizer state is keyed by parameter name (DDP's by index), so a run resumes only under the strategy it
was written with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from contrastive import sharded_checkpoint
from contrastive.checkpoint import is_sharded_checkpoint, load_checkpoint
from contrastive.config import ConfigError

GATHER_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
LOAD_FULL = StateDictOptions(full_state_dict=True)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def check_strategy(strategy: str, accum_steps: int, world_size: int) -> None:
    if strategy == "fsdp" and world_size > 1 and accum_steps > 1:
        # The accumulation path averages plain gradients itself, which would mix different shards.
        raise ConfigError(f"config error: train.accum_steps={accum_steps} is not supported with train.strategy=fsdp;"
                          " use train.accum_steps=1 or train.strategy=ddp")


def distribute(model: nn.Module, strategy: str, device: torch.device, accum_steps: int) -> nn.Module:
    """The module the step calls: DDP around the model, or the model itself sharded in place (FSDP).
    A single process gets the model unchanged under either strategy."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    check_strategy(strategy, accum_steps, dist.get_world_size())
    for block in (*model.image_tower.repeated_blocks(), *model.text_tower.blocks):
        fully_shard(block)
    # FSDP2 cannot shard 0-dim parameters (the loss's temperature and bias): they stay replicated, and their
    # gradients are averaged over ranks as soon as they are accumulated, as DDP would.
    scalars = {p for p in model.parameters() if p.ndim == 0}
    for param in scalars:
        param.register_post_accumulate_grad_hook(_average_gradient)
    fully_shard(model.loss, ignored_params=scalars)
    fully_shard(model, ignored_params=scalars)
    return model


def _average_gradient(param: torch.Tensor) -> None:
    dist.all_reduce(param.grad)
    param.grad /= dist.get_world_size()


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor of the whole value (a sharded model's gradient norm is a DTensor)."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """{"model": ..., "optimizer": ...} as a sharded checkpoint stores them: this rank's shards (DTensors) of a
    sharded model, the whole tensors of a plain one; the optimizer state keyed by parameter name."""
    return {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}


def restore_state(model: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path) -> None:
    """The model's and optimizer's state from `checkpoint`, on every rank. A sharded checkpoint is read in this
    run's shards, whatever world size wrote it (a collective); a single file is read whole and sharded as
    `load_full_state` does."""
    if is_sharded_checkpoint(checkpoint):
        state = sharded_state(model, optimizer)
        sharded_checkpoint.load_into(checkpoint, state)
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
        return
    state = load_checkpoint(checkpoint, mmap=True)
    load_full_state(model, optimizer, state["model"], state["optimizer"])


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and optimizer state dicts as a single-file checkpoint stores them. Under FSDP this is a collective
    (every rank calls it) and only rank 0 gets the entries."""
    if not is_sharded(model):
        return model.state_dict(), optimizer.state_dict()
    return (get_model_state_dict(model, options=GATHER_ON_RANK0),
            get_optimizer_state_dict(model, optimizer, options=GATHER_ON_RANK0))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                    optimizer_state: dict[str, Any]) -> None:
    """The inverse of `full_state`; every rank passes the whole checkpoint and keeps its own shard."""
    if not is_sharded(model):
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    set_model_state_dict(model, model_state, options=LOAD_FULL)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=LOAD_FULL)


def unsharded_copy(model: nn.Module, build: Callable[[], nn.Module], is_main: bool) -> nn.Module | None:
    """The model itself when it is not sharded; under FSDP a plain copy on rank 0 (None elsewhere), built by
    `build` and loaded with the gathered weights, for rank-0-only work such as evaluation. A collective."""
    if not is_sharded(model):
        return model
    state = get_model_state_dict(model, options=GATHER_ON_RANK0)
    if not is_main:
        return None
    copy = build()
    copy.load_state_dict(state)
    return copy
