"""Image-text retrieval: every image against every caption, scored with the model's `logits` in blocks.

Image-text retrieval sets: Karpathy-split JSON with an image root, or WebDataset shards.

Karpathy: DIR/dataset*.json (or the JSON's path) as {"images": [{"filename", "filepath"?, "split",
"sentences": [{"raw"}, ...]}, ...]}; images are looked up at DIR/filepath/filename, DIR/filename, then
DIR/images/filename. Only entries of `split` ("test" by default) count.
Shards: see eval/loading.py; each sample holds an image and a `txt` with one caption per line.
Each image yields (uint8 image, ((shard, position), captions)); the pair orders images independently of workers.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import Dataset

from eval.errors import EvalError
from eval.loading import (ImageFiles, ImageTransform, Pixels, ShardSamples, dataset_type, eval_transform,
                          find_shards, image_field, text_field)
from eval.metrics import check_finite, retrieval_metrics
from eval.runtime import EvaluableModel, Runtime, Tokenizer
from eval.tasks import Task, register_task


@register_task("retrieval")
class Retrieval(Task):
    """A Karpathy-split JSON with its images, or CLIP_benchmark shards, at `path` (the layouts above);
    `split` is the Karpathy split (and the shards' folder)."""

    metrics = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10", "mean_recall", "num_images",
               "num_captions")

    def __init__(self, path: str, split: str = "test"):
        self.path, self.split = path, split

    def open(self, pixels: Pixels) -> RetrievalSet:
        return open_retrieval_set(self.path, pixels.size, self.split, pixels.resize)

    def run(self, model: EvaluableModel, tokenizer: Tokenizer, data: RetrievalSet, runtime: Runtime,
            desc: str) -> dict[str, float]:
        return evaluate_retrieval(model, tokenizer, data, runtime, desc)


def evaluate_retrieval(model: EvaluableModel, tokenizer: Tokenizer, data: RetrievalSet, runtime: Runtime,
                       desc: str = "retrieval") -> dict[str, float]:
    """t2i_R@{1,5,10}, i2t_R@{1,5,10}, mean_recall (see eval.metrics), num_images and num_captions."""
    encoded = encode_retrieval_set(model, tokenizer, data, runtime, desc)
    scores = runtime.scores(model, encoded.image_repr, encoded.text_repr)
    check_finite(scores, f"{data.source}, {encoded.num_images} images x {encoded.num_captions} captions")
    metrics = retrieval_metrics(scores, encoded.caption_image)
    metrics["num_images"] = float(encoded.num_images)
    metrics["num_captions"] = float(encoded.num_captions)
    return metrics


@dataclass
class EncodedRetrievalSet:
    image_repr: torch.Tensor  # [N_image, ...] in dataset order, on the device
    text_repr: torch.Tensor  # [N_caption, ...]: image by image, captions in file order, on the device
    caption_image: torch.Tensor  # [N_caption] (CPU): the index of each caption's image

    @property
    def num_images(self) -> int:
        return len(self.image_repr)

    @property
    def num_captions(self) -> int:
        return len(self.text_repr)


def encode_retrieval_set(model: EvaluableModel, tokenizer: Tokenizer, data: RetrievalSet, runtime: Runtime,
                         desc: str = "retrieval") -> EncodedRetrievalSet:
    """Every image, then every caption, as the model represents them (`desc` labels the progress bars)."""
    loader = runtime.loader(data.images)
    total = len(loader) if data.num_images is not None else None
    image_reprs, orders, captions = [], [], []
    for images, payloads in runtime.bar(loader, f"{desc} images", total=total):
        image_reprs.append(runtime.encode_images(model, images))
        for order, image_captions in payloads:
            orders.append(order)
            captions.append(image_captions)
    if not orders:
        raise EvalError(f"{data.source} yielded no images")
    # Loader workers interleave shards; the (shard, position) order makes ties independent of their number.
    order = sorted(range(len(orders)), key=orders.__getitem__)
    image_repr = torch.cat(image_reprs)[torch.tensor(order, device=image_reprs[0].device)]
    captions = [captions[i] for i in order]
    texts = [caption for image_captions in captions for caption in image_captions]
    caption_image = torch.tensor([i for i, image_captions in enumerate(captions) for _ in image_captions])
    return EncodedRetrievalSet(image_repr, runtime.encode_texts(model, tokenizer, texts, f"{desc} captions"),
                               caption_image)


Captioned = tuple[tuple[int, int], list[str]]  # ((shard, position), captions)


@dataclass
class RetrievalSet:
    source: Path
    images: Dataset  # (uint8 image, Captioned)
    num_images: Optional[int]  # None when streamed from shards


def open_retrieval_set(path: str | os.PathLike, image_size: int, split: str = "test",
                       resize: str = "crop") -> RetrievalSet:
    given = Path(path)
    transform = eval_transform(image_size, resize)
    if given.is_file() and given.suffix == ".json":
        return _from_karpathy_json(given, split, transform)
    if not given.is_dir():
        raise EvalError(f"retrieval dataset {given} does not exist; expected a Karpathy-format JSON file or a "
                        f"directory holding one (dataset*.json) or WebDataset shards ({split}/0.tar ...)")
    found = sorted(given.glob("dataset*.json"))
    if len(found) > 1:
        raise EvalError(f"{given} holds several Karpathy JSON files ({', '.join(f.name for f in found)}); "
                        f"name the one to use")
    if found:
        return _from_karpathy_json(found[0], split, transform)
    shards = find_shards(given, split)
    if shards is None:
        raise EvalError(f"{given} holds neither a Karpathy JSON (dataset*.json) nor WebDataset shards (*.tar)")
    if (given / "dataset_type.txt").is_file() and dataset_type(given) != "retrieval":
        raise EvalError(f"{given / 'dataset_type.txt'} says {dataset_type(given)!r}; a retrieval set is expected "
                        f"here (classification sets go under eval.zeroshot)")
    return RetrievalSet(given, ShardSamples(shards, transform, _captioned_sample), num_images=None)


def _from_karpathy_json(path: Path, split: str, transform: ImageTransform) -> RetrievalSet:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalError(f"cannot read {path} as JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise EvalError(f"{path} is not in Karpathy format: expected an object with an \"images\" list")
    splits: Counter[str] = Counter()
    items: list[tuple[Path, Captioned]] = []
    missing: list[list[Path]] = []
    for index, entry in enumerate(data["images"]):
        where = f"{path}: images[{index}]"
        _expect(isinstance(entry, dict) and isinstance(entry.get("split"), str), where, 'an object with a "split"')
        splits[entry["split"]] += 1
        if entry["split"] != split:
            continue
        candidates = _image_candidates(path.parent, entry, where)
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            missing.append(candidates)
            continue
        items.append((image, ((0, len(items)), _captions(entry, where))))
    if missing:
        raise EvalError(f"{path}: {len(missing)} images of split {split!r} not found, e.g. looked for "
                        f"{' and '.join(str(c) for c in missing[0])}")
    if not items:
        present = ", ".join(f"{name}: {count}" for name, count in sorted(splits.items())) or "none"
        raise EvalError(f"{path} has no images in split {split!r} (splits present: {present})")
    return RetrievalSet(path, ImageFiles(items, transform), num_images=len(items))


def _image_candidates(root: Path, entry: dict[str, Any], where: str) -> list[Path]:
    filename, filepath = entry.get("filename"), entry.get("filepath")
    _expect(isinstance(filename, str) and filename != "", where, 'a "filename" string')
    _expect(filepath is None or isinstance(filepath, str), where, '"filepath" to be a string')
    first = [root / filepath / filename] if filepath else []
    return first + [root / filename, root / "images" / filename]


def _captions(entry: dict[str, Any], where: str) -> list[str]:
    sentences = entry.get("sentences")
    _expect(isinstance(sentences, list) and len(sentences) > 0, where, 'a non-empty "sentences" list')
    captions = []
    for number, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        _expect(isinstance(raw, str) and raw.strip() != "", f"{where}.sentences[{number}]", 'a non-empty "raw" string')
        captions.append(raw.strip())
    return captions


def _expect(ok: bool, where: str, expected: str) -> None:
    if not ok:
        raise EvalError(f"{where} is not in Karpathy format: expected {expected}")


def _captioned_sample(fields: dict[str, bytes], name: str, order: tuple[int, int]) -> tuple[bytes, Captioned]:
    captions = [line.strip() for line in text_field(fields, "txt", name).splitlines() if line.strip()]
    if not captions:
        raise EvalError(f"sample {name}: .txt holds no caption (expected one caption per line)")
    return image_field(fields, name), (order, captions)
