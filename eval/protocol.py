"""What the evaluators need from a model and a tokenizer, and nothing more (see docs/eval.md).

Image and text representations are opaque: dot-product models return normalised [N, D] vectors, Llip
returns image [N, K, Di] mixture tokens and text [N, Dt]. Scores come only from `logits`.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> LongTensor [N, L]


class EvaluableModel(Protocol):
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] on the model's device (the model normalises) -> image representation [N, ...]."""

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """LongTensor [N, L] -> text representation [N, ...]."""

    def logits(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> torch.Tensor:
        """[N_image, N_text] scores; higher means a better match."""

    def combine_templates(self, text_repr: torch.Tensor) -> torch.Tensor:
        """Representations of T prompts for one class [T, ...] -> one class representation [...]."""
