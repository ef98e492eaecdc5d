"""Tiny models that satisfy the evaluator protocol, for tests and benchmarks/eval_throughput.py.

They "see" colour: an image is its mean RGB (or, for the Llip-like model, the mean RGB of each of K
horizontal stripes), and a text is the sum of the RGB vectors of the colour words it contains. So a red
image matches "a photo of a red thing", and results can be worked out by hand.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COLOURS = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0),
}


class ToyTokenizer:
    """Word-level: the colour words get ids 1..6, every other word 0 (padding too); `length` ids per text."""

    def __init__(self, length: int = 16):
        self.length = length
        self.ids = {word: i + 1 for i, word in enumerate(COLOURS)}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        tokens = torch.zeros(len(texts), self.length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = text.lower().replace(".", " ").split()[: self.length]
            tokens[row, : len(words)] = torch.tensor([self.ids.get(w, 0) for w in words], dtype=torch.long)
        return tokens


class ToyColourModel(nn.Module):
    """Dot-product model: normalised mean-RGB image vectors against normalised colour-word text vectors."""

    def __init__(self, scale: float = 10.0):
        super().__init__()
        table = torch.zeros(len(COLOURS) + 1, 3)
        table[1:] = torch.tensor(list(COLOURS.values()))
        self.word_rgb = nn.Embedding.from_pretrained(table, freeze=True)
        self.scale = scale

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.float().mean(dim=(2, 3)) / 255.0, dim=-1, eps=1e-6)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.word_rgb(token_ids).sum(1), dim=-1, eps=1e-6)

    def logits(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> torch.Tensor:
        return self.scale * image_repr.float() @ text_repr.float().T

    def combine_templates(self, text_repr: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.normalize(text_repr, dim=-1).mean(0), dim=-1)


class ToyLlipModel(ToyColourModel):
    """Llip-like: the image is K stripe vectors [N, K, 3]; each text attends over them (softmax of tau x dot
    product) and is scored by the cosine between the attended mixture and the text. The mixture's norm comes
    from each image's K x K Gram matrix, so a logits call keeps K floats per pair, not a vector."""

    def __init__(self, stripes: int = 4, tau: float = 5.0, scale: float = 10.0):
        super().__init__(scale)
        self.stripes = stripes
        self.tau = tau

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        stripes = images.float().unflatten(2, (self.stripes, -1)).mean(dim=(3, 4)) / 255.0  # [N, 3, K]
        return F.normalize(stripes.transpose(1, 2), dim=-1, eps=1e-6)

    def logits(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> torch.Tensor:
        image_repr, text_repr = image_repr.float(), F.normalize(text_repr.float(), dim=-1, eps=1e-6)
        similarity = image_repr @ text_repr.T  # [N_image, K, N_text]: <stripe k, text>
        attention = (self.tau * similarity).softmax(1)
        gram = image_repr @ image_repr.transpose(1, 2)  # [N_image, K, K]
        mixture_norm = (attention * (gram @ attention)).sum(1).clamp_min(1e-12).sqrt()
        return self.scale * (attention * similarity).sum(1) / mixture_norm

    def combine_templates(self, text_repr: torch.Tensor) -> torch.Tensor:
        return text_repr.mean(0)
