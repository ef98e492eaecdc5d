"""Loader throughput: StreamLoader against a plain webdataset pipeline doing the same work.

    python benchmarks/loader_throughput.py [--samples 3072] [--batches 15] [--rounds 3]

Both pipelines read the same 256 x 256 px JPEG shards (written to a temp dir) and do the same work
per sample: decode, RandomResizedCrop(224, scale=(0.9, 1.0), bicubic) to uint8, tokenise the caption
(our BPE tokenizer, 77 tokens), batch 64. Throughput is samples/s after two warm-up batches, so
worker start-up is excluded. The two pipelines are timed in alternating rounds (the idle one's
workers wait on a full prefetch queue), and the table shows medians, so a machine whose load
drifts during the run still gives a fair ratio (StreamLoader / webdataset, same worker count).
"""
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch
import webdataset as wds
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from data.loader import StreamLoader
from data.tokenizer import Tokenizer, train_bpe

SOURCE_PX, OUTPUT_PX, BATCH, SHARDS, WARMUP_BATCHES = 256, 224, 64, 12, 2
COLOURS = ["red", "green", "blue", "yellow", "grey", "purple"]


def write_jpeg_shards(directory: Path, samples: int) -> str:
    generator = torch.Generator().manual_seed(0)
    per_shard = -(-samples // SHARDS)
    for shard in range(SHARDS):
        with wds.TarWriter(str(directory / f"shard-{shard:06d}.tar")) as writer:
            for index in range(shard * per_shard, min(samples, (shard + 1) * per_shard)):
                # Smooth gradients plus noise compress like photos (~20 kB), unlike pure noise.
                base = torch.rand(3, 8, 8, generator=generator) * 255
                pixels = F.resize(base, [SOURCE_PX, SOURCE_PX], antialias=True)
                pixels = (pixels + torch.randn(pixels.shape, generator=generator) * 8).clamp(0, 255).to(torch.uint8)
                buffer = io.BytesIO()
                F.to_pil_image(pixels).save(buffer, "JPEG", quality=90)
                colour = COLOURS[index % len(COLOURS)]
                writer.write({"__key__": f"{index:08d}", "jpg": buffer.getvalue(),
                              "txt": f"a {colour} blur number {index}\na picture in {colour}"})
    return str(directory / f"shard-{{000000..{SHARDS - 1:06d}}}.tar")


class _WebDatasetSample:
    """The same per-sample work as StreamLoader (a picklable callable for DataLoader workers)."""

    def __init__(self):
        self.crop = RandomResizedCrop(OUTPUT_PX, scale=(0.9, 1.0), interpolation=InterpolationMode.BICUBIC,
                                      antialias=True)

    def __call__(self, sample: tuple[Image.Image, str]) -> tuple[torch.Tensor, str]:
        image, text = sample
        return F.pil_to_tensor(self.crop(image.convert("RGB"))), text.splitlines()[0]


class _Collate:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, samples: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, texts = zip(*samples)
        return torch.stack(images), self.tokenizer(list(texts))


def webdataset_batches(pattern: str, tokenizer: Tokenizer, workers: int) -> Iterator:
    # Endless like StreamLoader: webdataset 1.0.2 accepts WebDataset(repeat=True) but does not repeat; .repeat() does.
    dataset = (wds.WebDataset(pattern, shardshuffle=100, seed=0, empty_check=False)
               .shuffle(1000).decode("pil").to_tuple("jpg", "txt").map(_WebDatasetSample())
               .batched(BATCH, collation_fn=_Collate(tokenizer), partial=False).repeat())
    return iter(wds.WebLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None))


def stream_batches(pattern: str, tokenizer: Tokenizer, workers: int) -> Iterator:
    return iter(StreamLoader([pattern], tokenizer, BATCH, OUTPUT_PX, workers=workers, shuffle_buffer=1000))


def samples_per_second(batches: Iterator, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * BATCH / (time.perf_counter() - start)


def compare(pattern: str, tokenizer: Tokenizer, workers: int, batches: int, rounds: int) -> tuple[float, float, float]:
    """Median samples/s of StreamLoader and webdataset, and the median of the per-round ratios."""
    ours, theirs = stream_batches(pattern, tokenizer, workers), webdataset_batches(pattern, tokenizer, workers)
    for _ in range(WARMUP_BATCHES):
        next(ours), next(theirs)
    timings = [(samples_per_second(ours, batches), samples_per_second(theirs, batches)) for _ in range(rounds)]
    return (statistics.median(a for a, _ in timings), statistics.median(b for _, b in timings),
            statistics.median(a / b for a, b in timings))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3072, help="samples written to the temp shards")
    parser.add_argument("--batches", type=int, default=15, help="timed batches of 64 per pipeline and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per worker count")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pattern = write_jpeg_shards(directory, args.samples)
        captions = [f"a {c} blur number {i}" for c in COLOURS for i in range(200)]
        tokenizer = Tokenizer.from_file(train_bpe(captions, 512, directory / "tokenizer.json"), context_length=77)
        print(f"source: {args.samples} samples, {SOURCE_PX}x{SOURCE_PX} px JPEG (q90) in {SHARDS} shards; output "
              f"{OUTPUT_PX} px uint8, batch {BATCH}; medians of {args.rounds} alternating rounds of {args.batches} "
              "batches")
        print(f"{'workers':>7}  {'StreamLoader':>14}  {'webdataset':>14}  {'ratio':>6}")
        for workers in (1, 2):
            ours, theirs, ratio = compare(pattern, tokenizer, workers, args.batches, args.rounds)
            print(f"{workers:>7}  {ours:>10.0f} s/s  {theirs:>10.0f} s/s  {ratio:>6.2f}")


if __name__ == "__main__":
    main()
