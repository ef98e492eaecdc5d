"""Torch datasets that decode images for evaluation: from files, or streamed from tar shards.

Both yield (uint8 image [3, S, S], payload); the payload is whatever the task attaches (a label, captions).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from eval.errors import EvalError
from eval.images import ImageTransform, decode
from eval.shards import iter_samples

IMAGE_FIELDS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's order of preference
# (fields of one sample, "shard:key" for errors, (shard index, position in shard)) -> (image bytes, payload)
SampleParser = Callable[[dict[str, bytes], str, tuple[int, int]], tuple[bytes, Any]]


class ImageFiles(Dataset):
    def __init__(self, items: list[tuple[Path, Any]], transform: ImageTransform):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        path, payload = self.items[index]
        return self.transform(decode(path, str(path))), payload


class ShardSamples(IterableDataset):
    """Every sample of every shard once; DataLoader worker w of W reads shards w, w+W, ..."""

    def __init__(self, shards: list[Path], transform: ImageTransform, parse: SampleParser):
        self.shards = shards
        self.transform = transform
        self.parse = parse

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        worker = get_worker_info()
        first, step = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for shard_index in range(first, len(self.shards), step):
            shard = self.shards[shard_index]
            for position, (key, fields) in enumerate(iter_samples(shard)):
                name = f"{shard}:{key}"
                image_bytes, payload = self.parse(fields, name, (shard_index, position))
                yield self.transform(decode(image_bytes, name)), payload


def image_field(fields: dict[str, bytes], name: str) -> bytes:
    found: Optional[str] = next((f for f in IMAGE_FIELDS if f in fields), None)
    if found is None:
        raise EvalError(f"sample {name} has no image (expected one of .{', .'.join(IMAGE_FIELDS)}; "
                        f"found .{', .'.join(sorted(fields))})")
    return fields[found]


def text_field(fields: dict[str, bytes], field: str, name: str) -> str:
    if field not in fields:
        raise EvalError(f"sample {name} has no .{field} member (found .{', .'.join(sorted(fields))})")
    try:
        return fields[field].decode("utf-8")
    except UnicodeDecodeError:
        raise EvalError(f"sample {name}: .{field} is not UTF-8 text") from None


def collate(batch: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, list[Any]]:
    images, payloads = zip(*batch)
    return torch.stack(images), list(payloads)
