"""Llip's scorer (Lavoie et al., 2024, "Modeling Caption Diversity in Contrastive Vision-Language
Pretraining"): each caption mixes the image's K mixture tokens into its own image vector.

For image i (tokens x_ik, k = 1..K) and text j (pooled pre-projection state t_j), per head h:
    q_j = LN(W_q t_j),  k_ik = LN(W_k x_ik),  v_ik = LN(W_v x_ik)      (LN only with qkv_norm)
    a_ijk = softmax over k of <k_ik, q_j> / tau                         (no 1/sqrt(d) scaling)
    z_ij = W_o concat_h(sum_k a_ijk v_ik)                               (W_o without bias)
    score_ij = <z_ij / |z_ij|, y_j / |y_j|>,  y_j = W_t t_j             (W_t without bias)
The pairwise vectors z_ij are N_image x N_text x D, so texts are scored `chunk_size` at a time and
each chunk is recomputed in the backward: memory O(N_image x chunk_size x D) plus the scores.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from losses.similarity import Similarity


class LlipSimilarity(Similarity):
    name = "llip"

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int, num_heads: int = 8, tau: float = 5.0,
                 chunk_size: int | None = 128, qkv_norm: bool = False):
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"llip: embed_dim={embed_dim} must be a positive multiple of num_heads={num_heads}")
        if tau <= 0:
            raise ValueError(f"llip: tau must be positive, got {tau}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"llip: chunk_size must be a positive number of texts (or None), got {chunk_size}")
        self.image_dim, self.text_dim = image_dim, text_dim
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.tau = tau
        self.text_chunk = chunk_size
        self.query = nn.Linear(text_dim, embed_dim)
        self.key = nn.Linear(image_dim, embed_dim)
        self.value = nn.Linear(image_dim, embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_dim, embed_dim, bias=False)
        self.query_norm, self.key_norm, self.value_norm = (
            nn.LayerNorm(self.head_dim) if qkv_norm else nn.Identity() for _ in range(3))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self._check_shapes(image, text)
        if self.text_chunk is None or text.shape[0] <= self.text_chunk:
            return self._score(image, text)
        chunks = text.split(self.text_chunk)
        if torch.is_grad_enabled():
            return torch.cat([checkpoint(self._score, image, chunk, use_reentrant=False) for chunk in chunks], dim=1)
        return torch.cat([self._score(image, chunk) for chunk in chunks], dim=1)

    def pair_embeddings(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_ii / |z_ii|, y_i / |y_i|): image i's vector as text i mixes it, and text i's embedding."""
        self._check_shapes(image, text)
        if image.shape[0] != text.shape[0]:
            raise ValueError(f"llip pair_embeddings pairs row i of image with row i of text, got {image.shape[0]} "
                             f"images and {text.shape[0]} texts")
        queries, keys, values = self._heads(image, text)
        weights = torch.einsum("nhd,nkhd->nhk", queries, keys).div(self.tau).softmax(dim=-1)
        mixed = torch.einsum("nhk,nkhd->nhd", weights, values).flatten(1)
        return F.normalize(self.out(mixed), dim=-1), F.normalize(self.text_projection(text), dim=-1)

    def _score(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        queries, keys, values = self._heads(image, text)
        weights = torch.einsum("thd,ikhd->ithk", queries, keys).div(self.tau).softmax(dim=-1)
        mixed = torch.einsum("ithk,ikhd->ithd", weights, values).flatten(2)
        visual = F.normalize(self.out(mixed), dim=-1)
        text_embedding = F.normalize(self.text_projection(text), dim=-1)
        return torch.einsum("itd,td->it", visual, text_embedding)

    def _heads(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries [N_text, heads, head_dim] and keys, values [N_image, K, heads, head_dim]."""
        heads, head_dim = self.num_heads, self.head_dim
        queries = self.query_norm(self.query(text).unflatten(-1, (heads, head_dim)))
        keys = self.key_norm(self.key(image).unflatten(-1, (heads, head_dim)))
        values = self.value_norm(self.value(image).unflatten(-1, (heads, head_dim)))
        return queries, keys, values

    def _check_shapes(self, image: torch.Tensor, text: torch.Tensor) -> None:
        if image.dim() != 3 or image.shape[2] != self.image_dim or text.dim() != 2 or text.shape[1] != self.text_dim:
            raise ValueError(f"llip scorer expects image mixture tokens [N, K, {self.image_dim}] and pooled text "
                             f"states [M, {self.text_dim}], got image {list(image.shape)} and text {list(text.shape)}")

    def combine_templates(self, text: torch.Tensor) -> torch.Tensor:
        """[T, text_dim] pre-projection states of one class's prompts -> their plain mean (the class query)."""
        return text.mean(dim=0)
