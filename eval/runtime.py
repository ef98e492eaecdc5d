"""How evaluation runs: device, mixed precision, batching, loader workers, progress bars."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Iterable, Optional, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.workers import stop_immune_worker_init
from eval.loading import collate
from eval.protocol import EvaluableModel, Tokenizer

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    batch_size: int = 256
    workers: int = 2
    autocast_dtype: Optional[torch.dtype] = None  # e.g. torch.bfloat16; None runs in the model's own dtype
    progress: bool = False

    def autocast(self) -> AbstractContextManager:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.workers, collate_fn=collate,
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
