"""Llip (Lavoie et al., 2024): text-conditioned mixing of the image's K mixture tokens, pairwise sigmoid loss
with the ring exchange of the text side; `objective="softmax"` (all-gather) is the InfoNCE ablation."""
from __future__ import annotations

from typing import Literal, Optional

from losses.base import ContrastiveLoss
from losses.llip_similarity import LlipSimilarity
from losses.registry import register


@register("llip")
class LlipLoss(ContrastiveLoss):
    """Takes image mixture tokens [B, K, image_dim] and pooled pre-projection text states [B, text_dim];
    owns the query/key/value/output projections and the text projection into embed_dim. `exchange`,
    `init_scale` and `init_bias` left None take the objective's defaults (ring, 10, -10 for sigmoid;
    all_gather, 1/0.07 for softmax)."""

    tower_outputs = ("mixture_tokens", "pooled_state")

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int, num_heads: int = 8, tau: float = 5.0,
                 chunk_size: Optional[int] = 128, qkv_norm: bool = False,
                 objective: Literal["sigmoid", "softmax"] = "sigmoid",
                 exchange: Optional[Literal["ring", "all_gather"]] = None, init_scale: Optional[float] = None,
                 init_bias: Optional[float] = None):
        similarity = LlipSimilarity(image_dim, text_dim, embed_dim, num_heads, tau, chunk_size, qkv_norm)
        super().__init__(similarity, objective, exchange, init_scale, init_bias)
