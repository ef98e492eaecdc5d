"""One optimisation step's forward and backward, with or without gradient accumulation.

Accumulation keeps the contrastive batch whole (OpenCLIP's accum-freq idea): the micro-batches'
representations are computed without grad, the loss is taken over the full batch, and each micro-batch
is then recomputed with grad and back-propagated with its slice of the representation gradient. The RNG
state is replayed per micro-batch, so patch dropout draws the same patches in both passes and the
gradient equals the non-accumulated one.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable

import torch
from torch import nn

from contrastive.distributed import average_gradients
from contrastive.rng import rng_state, set_rng_state


def forward_backward(model: nn.Module, wrapped: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
                     autocast: Callable[[], AbstractContextManager], accum_steps: int = 1) -> dict[str, torch.Tensor]:
    """`model` is the ContrastiveModel, `wrapped` the module that syncs gradients (DDP) or the model itself."""
    if accum_steps == 1:
        with autocast():
            image_repr, text_repr = wrapped(images, tokens)
        out = model.loss(image_repr, text_repr)
        out["loss"].backward()
        return out
    return _accumulated(model, wrapped, images, tokens, autocast, accum_steps)


def _accumulated(model: nn.Module, wrapped: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
                 autocast: Callable[[], AbstractContextManager], accum_steps: int) -> dict[str, torch.Tensor]:
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
    no_sync = getattr(wrapped, "no_sync", None)
    for k, (im, tk) in enumerate(zip(image_chunks, token_chunks)):
        set_rng_state(rng_before[k])
        with no_sync() if no_sync else _nothing(), autocast():
            image_repr, text_repr = wrapped(im, tk)
        with no_sync() if no_sync else _nothing():
            torch.autograd.backward((image_repr, text_repr), (image_grads[k], text_grads[k]))
    average_gradients([p for p in model.parameters() if p.requires_grad])
    return out


class _nothing(AbstractContextManager):
    def __exit__(self, *exc: object) -> None:
        return None
