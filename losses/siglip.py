"""SigLIP (Zhai et al., 2023): dot-product scores, pairwise sigmoid loss, ring exchange (or all-gather)."""
from __future__ import annotations

from typing import Literal

from losses.base import SIGMOID_INIT_BIAS, ContrastiveLoss
from losses.objectives import Sigmoid
from losses.registry import register
from losses.similarity import DotSimilarity


@register("siglip")
class SigLipLoss(ContrastiveLoss):
    """Memory O(b^2) per device with the ring, O(b x B) with all_gather. Scale init 10 and bias init -10
    (SigLIP, 3.2: t' = log 10, b = -10, a loss near 10 at the start)."""

    def __init__(self, exchange: Literal["ring", "all_gather"] = "ring", init_scale: float = Sigmoid.init_scale,
                 init_bias: float = SIGMOID_INIT_BIAS):
        super().__init__(DotSimilarity(), "sigmoid", exchange, init_scale, init_bias)
