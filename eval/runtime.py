"""How evaluation runs: what it needs of a model and a tokenizer (the protocol, see docs/eval.md), the device,
mixed precision, batching, loader workers, progress bars, and scoring every image-text pair in blocks.

Image and text representations are opaque: dot-product models return normalised [N, D] vectors, Llip returns
image [N, K, Di] mixture tokens and text [N, Dt]. Scores come only from the model's `logits`, one block of
image_block x text_block pairs at a time, so memory is bounded whatever the scorer keeps per pair (Llip's
cross-attention keeps a vector per pair); the [N_image, N_text] result is float32 on the CPU (5k images x 25k
captions: 0.5 GB).
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Protocol, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.workers import stop_immune_worker_init

T = TypeVar("T")
Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> LongTensor [N, L]
DEFAULT_BLOCK = (256, 1024)  # (images, texts) per model.logits call


class EvaluableModel(Protocol):
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] on the model's device (the model normalises) -> image representation [N, ...]."""

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """LongTensor [N, L] -> text representation [N, ...]."""

    def logits(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> torch.Tensor:
        """[N_image, N_text] scores; higher means a better match."""

    def combine_templates(self, text_repr: torch.Tensor) -> torch.Tensor:
        """Representations of T prompts for one class [T, ...] -> one class representation [...]."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    batch_size: int = 256
    workers: int = 2
    autocast_dtype: Optional[torch.dtype] = None  # e.g. torch.bfloat16; None runs in the model's own dtype
    progress: bool = False
    block: tuple[int, int] = DEFAULT_BLOCK

    def autocast(self) -> AbstractContextManager:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.workers, collate_fn=_collate,
                          pin_memory=self.device.type == "cuda", worker_init_fn=stop_immune_worker_init())

    def bar(self, items: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "batch") -> Iterable[T]:
        return tqdm(items, desc=desc, total=total, unit=unit, disable=not self.progress, leave=False)

    def encode_images(self, model: EvaluableModel, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            return model.encode_image(images.to(self.device, non_blocking=True))

    def encode_texts(self, model: EvaluableModel, tokenizer: Tokenizer, texts: list[str], desc: str) -> torch.Tensor:
        """Representations of `texts` in order, encoded batch_size at a time, left on the device."""
        starts = range(0, len(texts), self.batch_size)
        reprs = []
        for start in self.bar(starts, desc, total=len(starts)):
            tokens = tokenizer(texts[start:start + self.batch_size]).to(self.device, non_blocking=True)
            with torch.no_grad(), self.autocast():
                reprs.append(model.encode_text(tokens))
        return torch.cat(reprs)

    def scores(self, model: EvaluableModel, image_repr: torch.Tensor, text_repr: torch.Tensor) -> torch.Tensor:
        """[N_image, N_text] float32 logits on the CPU, `block` pairs per model.logits call."""
        image_block, text_block = self.block
        scores = torch.empty(len(image_repr), len(text_repr), dtype=torch.float32)
        with torch.no_grad(), self.autocast():
            for i in range(0, len(image_repr), image_block):
                for t in range(0, len(text_repr), text_block):
                    logits = model.logits(image_repr[i:i + image_block], text_repr[t:t + text_block])
                    scores[i:i + image_block, t:t + text_block] = logits.float().cpu()
        return scores


def _collate(batch: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, list[Any]]:
    images, payloads = zip(*batch)
    return torch.stack(images), list(payloads)
