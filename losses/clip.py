"""CLIP (Radford et al., 2021): dot-product scores, symmetric softmax cross-entropy, all-gather."""
from __future__ import annotations

from losses.base import ContrastiveLoss
from losses.registry import register
from losses.similarity import DotSimilarity


@register("clip")
class ClipLoss(ContrastiveLoss):
    """Memory O(b x B) per device: local rows against the gathered columns. Temperature init 1/0.07."""

    def __init__(self, objective: str = "softmax", exchange: str | None = None, init_scale: float | None = None,
                 init_bias: float | None = None):
        super().__init__(DotSimilarity(), objective, exchange, init_scale, init_bias)
