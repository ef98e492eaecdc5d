"""A contrastive loss = scorer (dot | llip) x objective (softmax | sigmoid) x exchange (all_gather | ring).

The registered losses are presets of this composition, each with its own arguments (losses/registry.py).
The loss owns its learnable temperature as a log-parameter `logit_scale` (exp clamped at 100),
`logit_bias` for the sigmoid objective, and the scorer's parameters. Logits and loss are computed
in float32 even under autocast.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from losses.distributed import gather_sizes, world_size
from losses.objectives import OBJECTIVES
from losses.similarity import Similarity

SIGMOID_INIT_BIAS = -10.0


class ContrastiveLoss(nn.Module):
    # What the model's towers hand the loss, (image, text): each tower builds only the head for its output.
    tower_outputs: ClassVar[tuple[str, str]] = ("embedding", "embedding")

    def __init__(self, similarity: Similarity, objective: str, exchange: str | None, init_scale: float | None,
                 init_bias: float | None):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; valid objectives: {', '.join(OBJECTIVES)}")
        self.objective = OBJECTIVES[objective]
        valid_exchanges = self.objective.exchanges
        if exchange is not None and exchange not in valid_exchanges:
            raise ValueError(f"exchange {exchange!r} does not work with the {objective} objective; "
                             f"valid exchanges for {objective}: {', '.join(valid_exchanges)}")
        self.exchange = exchange or valid_exchanges[0]
        init_scale = self.objective.init_scale if init_scale is None else init_scale
        if not 0 < init_scale <= self.objective.max_scale:
            raise ValueError(f"init_scale must be in (0, {self.objective.max_scale:g}], got {init_scale}")
        self.similarity = similarity
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        if self.objective.has_bias:
            self.logit_bias = nn.Parameter(torch.tensor(SIGMOID_INIT_BIAS if init_bias is None else float(init_bias)))
        elif init_bias is not None:
            raise ValueError(f"init_bias applies only to the sigmoid objective; "
                             f"the {objective} objective learns no bias")
        self._checked_batch: int | None = None

    @property
    def scorer(self) -> str:
        """What the model feeds the loss: "dot" (normalised embeddings) or "llip" (mixture tokens, text states)."""
        return self.similarity.name

    def logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[N_image, N_text] scaled (+bias) float32 logits of local inputs, without any exchange."""
        with torch.autocast(image.device.type, enabled=False):
            logits = self.similarity(image.float(), text.float()) * self._scale()
            return logits + self.logit_bias if self.objective.has_bias else logits

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """This rank's loss on its local pairs (row i of image matches row i of text), plus metrics."""
        self._check_batch(image, text)
        with torch.autocast(image.device.type, enabled=False):
            loss = self.objective.loss(self.logits, image.float(), text.float(), self.exchange,
                                       self.similarity.text_chunk)
        out = {"loss": loss, "logit_scale": self._scale().detach()}
        if self.objective.has_bias:
            out["logit_bias"] = self.logit_bias.detach()
        return out

    def combine_templates(self, text: torch.Tensor) -> torch.Tensor:
        """Text reprs of T prompts of one class [T, ...] -> one class repr [...]."""
        return self.similarity.combine_templates(text)

    def pair_embeddings(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row i of image with row i of text -> float32 L2-normalised vectors [N, D], [N, D] whose cosine the
        logit of that pair scales: logits[i, i] = scale x <image_i, text_i> (+ bias)."""
        with torch.autocast(image.device.type, enabled=False):
            return self.similarity.pair_embeddings(image.float(), text.float())

    def _scale(self) -> torch.Tensor:
        return self.logit_scale.float().exp().clamp(max=self.objective.max_scale)

    def _check_batch(self, image: torch.Tensor, text: torch.Tensor) -> None:
        """Equal local batches on every rank, checked (one small collective) whenever this rank's
        batch size changes, so steady-state steps add no host sync."""
        if image.shape[0] != text.shape[0]:
            raise ValueError(f"the loss got {image.shape[0]} images but {text.shape[0]} texts; "
                             f"row i of text must be the caption of row i of image")
        if world_size() == 1 or image.shape[0] == self._checked_batch:
            return
        sizes = gather_sizes(image.shape[0], image.device)
        if len(set(sizes)) > 1:
            per_rank = ", ".join(f"rank {r}: {s}" for r, s in enumerate(sizes))
            raise ValueError(f"local batch sizes differ across ranks ({per_rank}); every rank must pass "
                             f"the same number of pairs (drop the last partial batch)")
        self._checked_batch = image.shape[0]

    def extra_repr(self) -> str:
        return f"scorer={self.scorer}, objective={self.objective.name}, exchange={self.exchange}"
