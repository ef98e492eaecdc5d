"""Scorers: the unscaled similarity of every image with every text, in [-1, 1].

A scorer also says what the model must feed it (`name`: "dot" or "llip"), how the text reprs
of several prompt templates combine into one class repr for zero-shot classification, and which two
vectors it takes the cosine of for a given image-text pair (`pair_embeddings`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


class Similarity(nn.Module, ABC):
    name: ClassVar[str]
    text_chunk: int | None = None  # most texts one forward call should score; None: any number

    @abstractmethod
    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[N_image, N_text] similarities."""

    @abstractmethod
    def combine_templates(self, text: torch.Tensor) -> torch.Tensor:
        """The reprs of T prompts of one class [T, ...] -> one class repr [...]."""

    @abstractmethod
    def pair_embeddings(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row i of image with row i of text (N of each) -> the L2-normalised vectors [N, D], [N, D] whose dot
        product is that pair's similarity."""


class DotSimilarity(Similarity):
    """Cosine similarity of L2-normalised image [N_image, D] and text [N_text, D] embeddings."""

    name = "dot"

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if image.dim() != 2 or text.dim() != 2 or image.shape[1] != text.shape[1]:
            raise ValueError(f"dot scorer expects image [N, D] and text [M, D] embeddings, "
                             f"got image {list(image.shape)} and text {list(text.shape)}")
        return image @ text.T

    def combine_templates(self, text: torch.Tensor) -> torch.Tensor:
        """[T, D] embeddings of one class's prompts -> [D]: normalise, average, renormalise."""
        return F.normalize(F.normalize(text, dim=-1).mean(dim=0), dim=-1)

    def pair_embeddings(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embeddings themselves: the towers normalised them."""
        if image.dim() != 2 or image.shape != text.shape:
            raise ValueError(f"dot scorer pairs image [N, D] with text [N, D] embeddings, "
                             f"got image {list(image.shape)} and text {list(text.shape)}")
        return image, text
