"""SigLIP (Zhai et al., 2023): dot-product scores, pairwise sigmoid loss, ring exchange."""
from __future__ import annotations

from losses.base import ContrastiveLoss
from losses.registry import register
from losses.similarity import DotSimilarity


@register("siglip")
class SigLipLoss(ContrastiveLoss):
    """Memory O(b^2) per device with the ring. Scale init 10, bias init -10 (loss ~10 at the start)."""

    def __init__(self, objective: str = "sigmoid", exchange: str | None = None, init_scale: float | None = None,
                 init_bias: float | None = None):
        super().__init__(DotSimilarity(), objective, exchange, init_scale, init_bias)
