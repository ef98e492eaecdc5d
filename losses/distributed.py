"""The collectives a loss needs, with autograd, and rank/world helpers that also work without a
process group (one process: rank 0 of 1, every exchange is the identity).

Only the default (world) process group is used.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as functional


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `tensor` along dim 0, in rank order.

    The backward sums the gradient over ranks: each rank receives the gradient that all ranks'
    losses put on its rows. Every rank must pass the same shape.
    """
    if world_size() == 1:
        return tensor
    return functional.all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD)


def _send_receive(tensor: torch.Tensor, to_rank: int, from_rank: int) -> torch.Tensor:
    received = torch.empty_like(tensor)
    ops = [dist.P2POp(dist.isend, tensor, to_rank), dist.P2POp(dist.irecv, received, from_rank)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _SendToNextRank(torch.autograd.Function):
    """Forward: send to rank+1, receive from rank-1. Backward: the gradient travels the other way."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        r, w = rank(), world_size()
        return _send_receive(tensor.contiguous(), (r + 1) % w, (r - 1) % w)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        r, w = rank(), world_size()
        return _send_receive(grad.contiguous(), (r - 1) % w, (r + 1) % w)


def send_to_next_rank(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank passes `tensor` to rank+1 and gets rank-1's (cyclically), with autograd."""
    if world_size() == 1:
        return tensor
    return _SendToNextRank.apply(tensor)


def ring_pass(tensor: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (owner rank, block) for every rank's `tensor`: the local one first, then the blocks of
    rank-1, rank-2, ... as they arrive, one neighbour exchange (W-1 in all) per step."""
    r, w = rank(), world_size()
    block = tensor
    for step in range(w):
        if step:
            block = send_to_next_rank(block)
        yield (r - step) % w, block


def gather_sizes(size: int, device: torch.device) -> list[int]:
    """Every rank's `size`, in rank order (a collective with a host sync)."""
    if world_size() == 1:
        return [size]
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([size], dtype=torch.long, device=device))
    return [int(s) for s in sizes]
