"""All image-text scores through the model's own `logits`, one block of pairs at a time.

A block is image_block x text_block pairs, so memory is bounded whatever the scorer keeps per pair
(Llip's cross-attention keeps a vector per pair); the [N_image, N_text] result is float32 on the CPU
(5k images x 25k captions: 0.5 GB).
"""
from __future__ import annotations

import torch

from eval.protocol import EvaluableModel
from eval.runtime import Runtime

DEFAULT_BLOCK = (256, 1024)  # (images, texts) per model.logits call


def blocked_logits(model: EvaluableModel, image_repr: torch.Tensor, text_repr: torch.Tensor, runtime: Runtime,
                   block: tuple[int, int] = DEFAULT_BLOCK) -> torch.Tensor:
    image_block, text_block = block
    scores = torch.empty(len(image_repr), len(text_repr), dtype=torch.float32)
    with torch.no_grad(), runtime.autocast():
        for i in range(0, len(image_repr), image_block):
            for t in range(0, len(text_repr), text_block):
                logits = model.logits(image_repr[i:i + image_block], text_repr[t:t + text_block])
                scores[i:i + image_block, t:t + text_block] = logits.float().cpu()
    return scores
