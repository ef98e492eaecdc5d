"""The inputs both sides of benchmarks/versus_openclip.py draw: the same tensors from the same seeds. It needs
torch alone, so the peer venv, which holds OpenCLIP and not the project, imports it too."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def synthetic_batch(spec: dict[str, Any], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and token ids (the second half of each text padding) for the model shapes of `spec`."""
    g = torch.Generator().manual_seed(1)
    size, length, vocab = spec["image"]["image_size"], spec["text"]["context_length"], spec["text"]["vocab"]
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, vocab, (batch, length), generator=g)
    tokens[:, length // 2:] = 0
    return images, tokens


def retrieval_embeddings(n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n unit-norm image embeddings and n text embeddings near them, pair i matching."""
    g = torch.Generator().manual_seed(2)
    image = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    text = F.normalize(image + 0.5 * torch.randn(n, dim, generator=g), dim=-1)
    return image, text
