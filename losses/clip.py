"""CLIP (Radford et al., 2021): dot-product scores, symmetric softmax cross-entropy (InfoNCE), all-gather."""
from __future__ import annotations

from losses.base import ContrastiveLoss
from losses.registry import register
from losses.similarity import DotSimilarity


@register("clip")
class ClipLoss(ContrastiveLoss):
    """Memory O(b x B) per device: local rows against the gathered columns. Temperature init 1/0.07 (CLIP, 2.5)."""

    def __init__(self, init_scale: float = 1 / 0.07):
        super().__init__(DotSimilarity(), "softmax", "all_gather", init_scale, None)
