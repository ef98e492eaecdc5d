"""Objectives: how scaled logits become a loss, and the exchanges that compute it across ranks.

Every rank scores its local images (rows) against texts; the positive of local image i is the
global text rank * b + i. A rank's loss covers its own rows (and, for softmax, its own texts as
rows too), so the mean over ranks is the full-batch loss.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from losses.distributed import all_gather_with_grad, rank, ring_pass, world_size

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Objective(ABC):
    name: ClassVar[str]
    init_scale: ClassVar[float]  # exp(logit_scale) at initialisation
    max_scale: ClassVar[float]  # exp(logit_scale) is clamped to at most this
    has_bias: ClassVar[bool]  # whether the loss learns logit_bias
    exchanges: ClassVar[tuple[str, ...]]  # supported exchanges; the first is the default

    @abstractmethod
    def loss(self, logits: LogitsFn, image: torch.Tensor, text: torch.Tensor, exchange: str,
             text_chunk: int | None) -> torch.Tensor:
        """This rank's loss; `logits(image, text)` gives scaled (+bias) float32 logits and
        `text_chunk` is how many texts one call may score (None: any number)."""


class Softmax(Objective):
    """Symmetric InfoNCE (CLIP): cross-entropy of each image over all texts and each text over all
    images, averaged. Needs whole rows, so only all_gather: memory O(b x B) per device."""

    name = "softmax"
    init_scale = 1 / 0.07
    max_scale = 100.0  # CLIP clips the temperature so that logits scale by at most 100 (Radford et al. 2021, 2.5)
    has_bias = False
    exchanges = ("all_gather",)

    def loss(self, logits: LogitsFn, image: torch.Tensor, text: torch.Tensor, exchange: str,
             text_chunk: int | None) -> torch.Tensor:
        local_batch = image.shape[0]
        labels = rank() * local_batch + torch.arange(local_batch, device=image.device)  # global caption indices
        image_to_text = logits(image, all_gather_with_grad(text))
        if world_size() == 1:
            text_to_image = image_to_text.T
        else:
            text_to_image = logits(all_gather_with_grad(image), text).T
        return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2


def pair_loss_sum(logits: torch.Tensor, first_column: int, first_positive: int) -> torch.Tensor:
    """Sum over the block of -log sigmoid(z * logit), z = +1 on matching pairs and -1 otherwise.

    The block's columns are the global texts first_column, first_column + 1, ...; its row i (a local
    image) matches global text first_positive + i. Since -log sigmoid(-x) = softplus(x) and
    -log sigmoid(x) = softplus(x) - x, this is softplus over the block minus the matching logits,
    a diagonal found with host integers only.
    """
    rows, columns = logits.shape
    start, stop = max(first_column, first_positive), min(first_column + columns, first_positive + rows)
    total = F.softplus(logits).sum()
    if stop > start:
        matching = logits[start - first_positive:stop - first_positive, start - first_column:stop - first_column]
        total = total - matching.diagonal().sum()
    return total


def _chunk_loss(logits: LogitsFn, image: torch.Tensor, texts: torch.Tensor, first_column: int,
                first_positive: int) -> torch.Tensor:
    return pair_loss_sum(logits(image, texts), first_column, first_positive)


class Sigmoid(Objective):
    """Pairwise sigmoid loss (SigLIP), normalised by the local batch: -(1/b) sum over local images
    and all texts. It is a sum over text blocks, so the ring computes it one neighbour's block at
    a time, recomputing each block's logits in the backward: memory O(b^2) (O(b x chunk) when the
    scorer chunks texts) per device instead of O(b x B)."""

    name = "sigmoid"
    init_scale = 10.0  # SigLIP's t' = log 10
    max_scale = math.inf  # SigLIP learns t' unclamped (big_vision); SigLIP So400m/14@384's scale is about 112
    has_bias = True
    exchanges = ("ring", "all_gather")

    def loss(self, logits: LogitsFn, image: torch.Tensor, text: torch.Tensor, exchange: str,
             text_chunk: int | None) -> torch.Tensor:
        local_batch = image.shape[0]
        first_positive = rank() * local_batch
        if exchange == "all_gather":
            return pair_loss_sum(logits(image, all_gather_with_grad(text)), 0, first_positive) / local_batch
        total = image.new_zeros(())
        for owner, block in ring_pass(text):
            chunk = text_chunk or block.shape[0]
            for offset in range(0, block.shape[0], chunk):
                first_column = owner * local_batch + offset
                texts = block[offset:offset + chunk]
                if torch.is_grad_enabled():
                    total = total + checkpoint(_chunk_loss, logits, image, texts, first_column, first_positive,
                                               use_reentrant=False)
                else:
                    total = total + _chunk_loss(logits, image, texts, first_column, first_positive)
        return total / local_batch


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (Softmax(), Sigmoid())}
