"""Every sample of a list of shards once, in each shard's own order, decoded and tokenized in DataLoader workers:
the reader of the commands that write one output per shard (`contrastive data score`).

    for item in shard_batch_loader(ShardBatches(shards, pixels, tokenizer, batch_size=256), workers=2):
        if isinstance(item, ShardBatch): ...    # images of up to 256 samples of one shard, all their caption lines
        else: ...                               # ShardEnd: that shard is done (or could not be read to its end)

Worker w of W reads shards w, w+W, ... A batch never spans two shards, so what each batch of a shard holds does
not depend on the worker count. The DataLoader hands out its workers' items round-robin and each worker's in
order, so a consumer sees each shard's batches in order and then its ShardEnd, with at most one shard open per
worker. Images are decoded as training decodes them (data.validate.decode_image, JPEG draft mode when the source
is at least twice the size) and made square by the model's resize mode (data.decode.square_pixels); a sample's
captions are its caption lines (data.validate.sample_captions). Bad samples are counted by reason, not batched.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data.decode import square_pixels
from data.errors import ShardReadError
from data.shards import read_shard
from data.validate import BadSample, decode_image, image_and_captions
from data.workers import stop_immune_worker_init

Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> LongTensor [N, L]


@dataclass
class ShardBatch:
    shard: int  # index into the shard list
    keys: list[str]
    images: torch.Tensor  # uint8 [B, 3, S, S]
    tokens: torch.Tensor  # long [T, L]: every caption line of the B samples, sample after sample
    captions: list[int]  # caption lines of each sample (they sum to T)

    def pin_memory(self) -> ShardBatch:
        """What the DataLoader's pin_memory calls on an object it does not know."""
        return ShardBatch(self.shard, self.keys, self.images.pin_memory(), self.tokens.pin_memory(), self.captions)


@dataclass
class ShardEnd:
    shard: int
    keys: list[str]  # every sample's key in order, skipped ones included
    skipped: dict[str, int] = field(default_factory=dict)  # samples not batched, by reason (data.validate)
    error: Optional[str] = None  # why the shard could not be read to its end (its batches are then incomplete)


ShardItem = Union[ShardBatch, ShardEnd]


@dataclass(frozen=True)
class Pixels:
    size: int
    resize: str = "crop"  # data.decode.RESIZE_MODES


class ShardBatches(IterableDataset):
    def __init__(self, shards: list[str], pixels: Pixels, tokenizer: Tokenizer, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.shards, self.pixels, self.tokenizer, self.batch_size = shards, pixels, tokenizer, batch_size

    def __iter__(self) -> Iterator[ShardItem]:
        worker = get_worker_info()
        first, step = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for index in range(first, len(self.shards), step):
            yield from self.shard_items(index)

    def shard_items(self, index: int) -> Iterator[ShardItem]:
        end = ShardEnd(index, [])
        pending: list[tuple[str, torch.Tensor, list[str]]] = []
        try:
            for sample in read_shard(self.shards[index]):
                end.keys.append(sample.key)
                try:
                    pending.append((sample.key, *self._decode(sample.members)))
                except BadSample as e:
                    end.skipped[e.reason] = end.skipped.get(e.reason, 0) + 1
                if len(pending) == self.batch_size:
                    yield self._batch(index, pending)
                    pending = []
        except ShardReadError as e:
            end.error = str(e)
        if pending:
            yield self._batch(index, pending)
        yield end

    def _decode(self, members: dict[str, bytes]) -> tuple[torch.Tensor, list[str]]:
        image, captions = image_and_captions(members)
        rgb = decode_image(image, "the image member", draft_short_side=self.pixels.size)
        return square_pixels(rgb, self.pixels.size, self.pixels.resize), captions

    def _batch(self, index: int, samples: list[tuple[str, torch.Tensor, list[str]]]) -> ShardBatch:
        keys, images, captions = zip(*samples)
        tokens = self.tokenizer([line for lines in captions for line in lines])
        return ShardBatch(index, list(keys), torch.stack(images), tokens, [len(lines) for lines in captions])


def shard_batch_loader(dataset: ShardBatches, workers: int, pin_memory: bool = False) -> DataLoader:
    """The workers ignore stop signals sent to the process group (data.workers): this process stops them."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers > 0:
        # As in data.loader: forked workers are the parallelism; `tokenizers`' own thread pool would deadlock them.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=2 if workers else None, worker_init_fn=stop_immune_worker_init())
