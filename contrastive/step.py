"""One optimisation step: forward and backward, with or without gradient accumulation, then gradient clipping, the
ranks' agreement on whether the loss or the gradient is non-finite, and the update, skipped where it is. Nothing in
it waits for the device: the flag is all-reduced and handed to the fused AdamW as its `found_inf` (as torch.amp's
GradScaler does), which leaves the weights, the moments and the step count as they were.

Accumulation keeps the contrastive batch whole (OpenCLIP's accum-freq idea): the micro-batches'
representations are computed without grad, the loss is taken over the full batch, and each micro-batch
is then recomputed with grad and back-propagated with its slice of the representation gradient. The RNG
state is replayed per micro-batch, so patch dropout draws the same patches in both passes and the
gradient equals the non-accumulated one.
"""
from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from contrastive import sharding
from contrastive.distributed import average_gradients
from contrastive.rng import rng_state, set_rng_state

Autocast = Callable[[], AbstractContextManager]


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """The autocast dtype of a train.precision: bfloat16 for bf16, None (no autocast) for fp32."""
    return torch.bfloat16 if precision == "bf16" else None


def autocast_for(precision: str, device: torch.device) -> Autocast:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


@dataclass(frozen=True)
class StepResult:
    out: dict[str, torch.Tensor]  # the loss's outputs
    grad_norm: torch.Tensor  # before clipping
    skipped: torch.Tensor  # 1.0 if the loss or the gradient was non-finite on some rank (no rank updated), else 0.0

    @property
    def metrics(self) -> dict[str, torch.Tensor]:
        return {**self.out, "grad_norm": self.grad_norm}


def train_step(model: nn.Module, wrapped: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               tokens: torch.Tensor, lr: float, autocast: Autocast, accum_steps: int = 1,
               clip_grad: float = 0.0, forward: Optional[Forward] = None) -> StepResult:
    """`clip_grad` is the maximum gradient norm, 0 for no clipping; `optimizer` a fused AdamW (it takes `found_inf`);
    see forward_backward for the rest."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    out = forward_backward(model, wrapped, images, tokens, autocast, accum_steps, forward or forward_and_loss)
    max_norm = clip_grad if clip_grad > 0 else float("inf")
    grad_norm = sharding.full_tensor(nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    skipped = (~torch.isfinite(out["loss"].detach()) | ~torch.isfinite(grad_norm)).float()
    if dist.is_initialized():
        dist.all_reduce(skipped, op=dist.ReduceOp.MAX)  # every rank skips, or updates, at the same step
    optimizer.found_inf = skipped
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(out, grad_norm, skipped)


def forward_and_loss(model: nn.Module, wrapped: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
                     autocast: Autocast) -> dict[str, torch.Tensor]:
    """Both towers and the loss on a whole batch: what `train.compile=step` compiles as one."""
    with autocast():
        image_repr, text_repr = wrapped(images, tokens)
    return model.loss(image_repr, text_repr)


Forward = Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor, Autocast], dict[str, torch.Tensor]]


def compiled_forward(backend: str = "inductor") -> Forward:
    """forward_and_loss under torch.compile. Shapes stay static (the loader's batches are whole, the text is padded
    to its context), so after the first step's compilation no step recompiles (tested)."""
    return torch.compile(forward_and_loss, backend=backend)


def forward_backward(model: nn.Module, wrapped: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
                     autocast: Autocast, accum_steps: int = 1,
                     forward: Forward = forward_and_loss) -> dict[str, torch.Tensor]:
    """`model` is the ContrastiveModel, `wrapped` the module that syncs gradients (DDP) or the model itself;
    `forward` the whole-batch forward (compiled or not; the accumulation path runs the towers eagerly)."""
    if accum_steps == 1:
        out = forward(model, wrapped, images, tokens, autocast)
        out["loss"].backward()
        return out
    return _accumulated(model, wrapped, images, tokens, autocast, accum_steps)


def _accumulated(model: nn.Module, wrapped: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
                 autocast: Autocast, accum_steps: int) -> dict[str, torch.Tensor]:
    if images.shape[0] % accum_steps:
        raise ValueError(f"local batch {images.shape[0]} is not divisible by train.accum_steps={accum_steps}")
    image_chunks, token_chunks = images.chunk(accum_steps), tokens.chunk(accum_steps)
    rng_before = []
    image_reprs, text_reprs = [], []
    with torch.no_grad():
        for im, tk in zip(image_chunks, token_chunks):
            rng_before.append(rng_state())
            with autocast():
                image_repr, text_repr = model(im, tk)
            image_reprs.append(image_repr)
            text_reprs.append(text_repr)
    image_all = torch.cat(image_reprs).requires_grad_()
    text_all = torch.cat(text_reprs).requires_grad_()
    out = model.loss(image_all, text_all)
    out["loss"].backward()
    sizes = [c.shape[0] for c in image_chunks]
    image_grads, text_grads = image_all.grad.split(sizes), text_all.grad.split(sizes)
    no_sync = getattr(wrapped, "no_sync", contextlib.nullcontext)
    for k, (im, tk) in enumerate(zip(image_chunks, token_chunks)):
        set_rng_state(rng_before[k])
        with no_sync(), autocast():
            image_repr, text_repr = wrapped(im, tk)
        with no_sync():
            torch.autograd.backward((image_repr, text_repr), (image_grads[k], text_grads[k]))
    average_gradients([p for p in model.parameters() if p.requires_grad])
    return out
