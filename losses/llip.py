"""Llip (Lavoie et al., 2024): text-conditioned mixing of the image's K mixture tokens, pairwise
sigmoid loss, ring exchange of the text side."""
from __future__ import annotations

from losses.base import ContrastiveLoss
from losses.llip_similarity import LlipSimilarity
from losses.registry import register


@register("llip")
class LlipLoss(ContrastiveLoss):
    """Takes image mixture tokens [B, K, image_dim] and pooled pre-projection text states [B, text_dim];
    owns the query/key/value/output projections and the text projection into embed_dim."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int, num_heads: int = 8, tau: float = 5.0,
                 chunk_size: int | None = 128, qkv_norm: bool = False, objective: str = "sigmoid",
                 exchange: str | None = None, init_scale: float | None = None, init_bias: float | None = None):
        similarity = LlipSimilarity(image_dim, text_dim, embed_dim, num_heads, tau, chunk_size, qkv_norm)
        super().__init__(similarity, objective, exchange, init_scale, init_bias)
