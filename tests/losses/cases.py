"""Tiny losses and batches shared by the loss tests: every scorer x objective x exchange combination."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import losses

DOT_DIM = 8
LLIP_DIMS = dict(image_dim=6, text_dim=5, embed_dim=8, num_heads=2)
MIXTURE_TOKENS = 3

# case id -> (registered name, build kwargs)
CASES: dict[str, tuple[str, dict]] = {
    "clip-all_gather": ("clip", {}),
    "siglip-ring": ("siglip", {}),
    "siglip-all_gather": ("siglip", {"exchange": "all_gather"}),
    "llip-ring": ("llip", {**LLIP_DIMS, "chunk_size": 3}),
    "llip-all_gather": ("llip", {**LLIP_DIMS, "chunk_size": 3, "exchange": "all_gather"}),
    "llip-softmax-all_gather": ("llip", {**LLIP_DIMS, "chunk_size": 3, "objective": "softmax"}),
}


def make_loss(case: str, **overrides) -> losses.ContrastiveLoss:
    """The case's loss with the same parameters on every process, temperature and bias moved off their
    initial values so that every gradient is informative."""
    name, kwargs = CASES[case]
    torch.manual_seed(0)
    loss = losses.build(name, **{**kwargs, **overrides})
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(4.0))
        if hasattr(loss, "logit_bias"):
            loss.logit_bias.fill_(-1.5)
    return loss


def make_batch(scorer: str, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text reprs whose rows come from different distributions (a row-dependent offset)."""
    g = torch.Generator().manual_seed(seed)
    offset = torch.linspace(-1.0, 1.0, batch)
    if scorer == "dot":
        image = F.normalize(torch.randn(batch, DOT_DIM, generator=g) + offset[:, None], dim=-1)
        text = F.normalize(torch.randn(batch, DOT_DIM, generator=g) - offset[:, None], dim=-1)
        return image, text
    image = torch.randn(batch, MIXTURE_TOKENS, LLIP_DIMS["image_dim"], generator=g) * (1.5 + offset[:, None, None])
    text = torch.randn(batch, LLIP_DIMS["text_dim"], generator=g) + offset[:, None]
    return image, text
