"""How evaluation runs: what it needs of a model and a tokenizer (the protocol, see docs/eval.md), the device,
mixed precision, batching, loader workers, progress bars, and scoring every image-text pair in blocks.

Image and text representations are opaque: dot-product models return normalised [N, D] vectors, Llip returns
image [N, K, Di] mixture tokens and text [N, Dt]. Scores come only from the model's `logits`, one block of
image_block x text_block pairs at a time, so memory is bounded whatever the scorer keeps per pair (Llip's
cross-attention keeps a vector per pair); the [N_image, N_text] result is float32 on the CPU (5k images x 25k
captions: 0.5 GB).

What a task computes from the model may be kept between evaluations (`cached`): under `cache_dir`, keyed by
`model_key`, which names the model's weights, and by what the task says it depends on. Without either, as when
eval is used as a library, everything is computed each time.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.atomic import AtomicFile
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

    # Optional: only the task types that look at the embedding geometry (embedding_stats) call it.
    def pair_embeddings(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row i of image_repr with row i of text_repr (N of each) -> L2-normalised vectors [N, D], [N, D] whose
        cosine is the pair's similarity as `logits` scores it (dot-product models: the embeddings; Llip: the image
        vector the caption mixes, and the caption's embedding)."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    batch_size: int = 256
    workers: int = 2
    autocast_dtype: Optional[torch.dtype] = None  # e.g. torch.bfloat16; None runs in the model's own dtype
    progress: bool = False
    block: tuple[int, int] = DEFAULT_BLOCK
    cache_dir: Optional[Path] = None  # where `cached` keeps what tasks computed; None: nothing is kept
    model_key: str = ""  # names the model's weights (contrastive: a digest of them); "": nothing is kept

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

    def cached(self, kind: str, key: Mapping[str, Any],
               compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """compute()'s tensors (on the CPU), or those a call with the same `kind`, `key` (JSON-able: what they
        depend on besides the model, e.g. a dataset, its files, the pixels) and model_key stored in
        cache_dir/kind/, written atomically."""
        if self.cache_dir is None or not self.model_key:
            return {name: tensor.cpu() for name, tensor in compute().items()}
        identity = json.dumps({"kind": kind, "model": self.model_key, **key}, sort_keys=True)
        path = Path(self.cache_dir) / kind / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.pt"
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
                stored = {}  # unreadable (a disk error): it is computed again and replaced
            if stored.get("identity") == identity:
                return stored["tensors"]
        tensors = {name: tensor.cpu() for name, tensor in compute().items()}
        with AtomicFile(path) as out:
            torch.save({"identity": identity, "tensors": tensors}, out.file)
        return tensors


def _collate(batch: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, list[Any]]:
    images, payloads = zip(*batch)
    return torch.stack(images), list(payloads)
