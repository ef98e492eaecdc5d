"""Evaluator throughput on this machine: `python benchmarks/eval_throughput.py [--quick]`.

1. Zero-shot end to end (PNG decode, resize + crop, a tiny colour model, logits, ranks) on a synthetic
   ImageFolder: images/s with 0 and 2 loader workers.
2. Retrieval at tiny width, 5k images x 25k captions: all logits (eval.runtime's Runtime.scores, one model.logits call
   per 256 x 1024 block) and the t2i + i2t ranks, for a dot-product and a Llip-like scorer (tests/eval/toy.py);
   blocked against one call for everything (naive), at a size where the naive call fits.
Ratios compare variants timed side by side in this run: best of 3 rounds, variants alternating in each.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from eval import evaluate
from eval.metrics import image_to_text_ranks, text_to_image_ranks
from eval.runtime import DEFAULT_BLOCK, EvaluableModel, Runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the toy models are test fixtures, not installed
from tests.eval.toy import COLOURS, ToyColourModel, ToyLlipModel, ToyTokenizer  # noqa: E402

WIDTH, LLIP_TOKENS, CAPTIONS_PER_IMAGE = 64, 8, 5
Row = tuple[str, str]


def race(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time of each variant over `rounds`, variants alternating within a round, so that load from
    other processes falls on all of them alike."""
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def write_colour_folder(root: Path, per_class: int, size: int) -> int:
    generator = torch.Generator().manual_seed(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = torch.randint(0, 60, (size, size, 3), generator=generator)
            pixels = (torch.tensor(rgb) * 195 + noise).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / name / f"{i:04d}.png")
    (root / "templates.txt").write_text("a photo of a {c}.\na {c} thing.\n")
    return per_class * len(COLOURS)


def zeroshot_rows(per_class: int, rounds: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        count = write_colour_folder(Path(tmp), per_class, size=96)
        def run(workers: int):
            return lambda: evaluate(ToyColourModel(), ToyTokenizer(), image_size=64, zeroshot={"colours": tmp},
                                    batch_size=64, workers=workers, progress=False)

        best = race({"0": run(0), "2": run(2)}, rounds)
    rate = {workers: count / seconds for workers, seconds in best.items()}
    return [(f"zero-shot {count} PNGs 96px -> 64px, workers=0", f"{rate['0']:,.0f} images/s"),
            (f"zero-shot {count} PNGs 96px -> 64px, workers=2", f"{rate['2']:,.0f} images/s"),
            ("  ratio workers=2 / workers=0", f"{rate['2'] / rate['0']:.2f}x")]


def random_reprs(images: int, llip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image_shape = (images, LLIP_TOKENS, WIDTH) if llip else (images, WIDTH)
    image_repr = F.normalize(torch.randn(*image_shape, generator=generator), dim=-1)
    text_repr = F.normalize(torch.randn(images * CAPTIONS_PER_IMAGE, WIDTH, generator=generator), dim=-1)
    return image_repr, text_repr, torch.arange(images).repeat_interleave(CAPTIONS_PER_IMAGE)


def retrieval_rows(label: str, model: EvaluableModel, llip: bool, images: int, naive_images: int,
                   rounds: int) -> list[Row]:
    """Blocked logits and ranks at `images` x 5 captions each; blocked against naive at `naive_images`."""
    runtime = Runtime(torch.device("cpu"))
    image_repr, text_repr, caption_image = random_reprs(images, llip)
    scores = runtime.scores(model, image_repr, text_repr)
    full = race({"logits": lambda: runtime.scores(model, image_repr, text_repr),
                 "ranks": lambda: (text_to_image_ranks(scores, caption_image),
                                   image_to_text_ranks(scores, caption_image))}, rounds)
    small_images, small_texts, _ = random_reprs(naive_images, llip)
    with torch.no_grad():
        compared = race({"blocked": lambda: runtime.scores(model, small_images, small_texts),
                         "naive": lambda: model.logits(small_images, small_texts)}, rounds)
    size, small = f"{images} x {len(text_repr)}", f"{naive_images} x {len(small_texts)}"
    return [(f"{label} {size}: logits, blocked {DEFAULT_BLOCK[0]}x{DEFAULT_BLOCK[1]}", f"{full['logits']:.2f} s"),
            (f"{label} {size}: t2i + i2t ranks", f"{full['ranks']:.2f} s"),
            (f"{label} {small}: logits, blocked / one call (naive)",
             f"{compared['blocked']:.2f} s / {compared['naive']:.2f} s"),
            (f"  ratio blocked / naive ({label})", f"{compared['blocked'] / compared['naive']:.2f}x")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    images = 500 if args.quick else 5000
    rows = [("torch threads / load average at start", f"{torch.get_num_threads()} / {os.getloadavg()[0]:.1f}")]
    rows += zeroshot_rows(per_class=8 if args.quick else 100, rounds=rounds)
    rows += retrieval_rows("dot", ToyColourModel(), False, images, naive_images=images, rounds=rounds)
    # One call for all Llip-like pairs would hold several [5k, K, 25k] float tensors (4 GB each): compare at 1k.
    rows += retrieval_rows("Llip-like", ToyLlipModel(LLIP_TOKENS), True, images, naive_images=images // 5,
                           rounds=rounds)
    width = max(len(name) for name, _ in rows)
    for name, value in [("eval benchmark", "result"), *rows]:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
