"""Zero-shot classification: each class is its prompt templates filled with its name, encoded and combined by
the model (`combine_templates`); each image is scored against every class with the model's `logits`.

Zero-shot classification sets: an ImageFolder tree or CLIP_benchmark WebDataset shards.

ImageFolder: ROOT/CLASS/IMAGE (e.g. ImageNet's val/n01440764/*.JPEG); classes are the sorted folder names.
Class names come from ROOT/classnames.txt (one per line, sorted-folder order); without it, 1000 WordNet-id
folders get CLIP's ImageNet names, and other folders their own names ("_" read as a space). Templates come
from ROOT/templates.txt, else the default set.
Shards: see eval/loading.py; each sample holds an image and a `cls` (integer label); classnames.txt is
required and zeroshot_classification_templates.txt optional.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, Optional

import torch
from torch.utils.data import Dataset

from eval.errors import EvalError
from eval.loading import (IMAGE_FILE_SUFFIXES, ImageFiles, ImageTransform, Pixels, ShardSamples, dataset_type,
                          eval_transform, find_shards, image_field, is_image_file, sidecar, text_field)
from eval.metrics import check_finite, classification_metrics, target_ranks
from eval.prompts import fill, imagenet_classnames, read_lines, read_templates, template_set
from eval.runtime import EvaluableModel, Runtime, Tokenizer
from eval.tasks import Task, register_task


@register_task("zeroshot")
class ZeroShot(Task):
    """An ImageFolder tree or CLIP_benchmark shards at `path` (the layouts above); `templates` names the
    shipped prompts for a set that brings none ("openai": CLIP's 80, "simple": 7); `split` the shards' folder."""

    metrics = ("top1", "top5", "mean_per_class_recall", "num_images")

    def __init__(self, path: str, templates: Literal["openai", "simple"] = "openai", split: str = "test"):
        self.path, self.templates, self.split = path, templates, split

    def open(self, pixels: Pixels) -> ClassificationSet:
        return open_classification_set(self.path, pixels.size, self.templates, self.split, pixels.resize)

    def run(self, model: EvaluableModel, tokenizer: Tokenizer, data: ClassificationSet, runtime: Runtime,
            desc: str) -> dict[str, float]:
        return evaluate_zeroshot(model, tokenizer, data, runtime, desc)


def class_representations(model: EvaluableModel, tokenizer: Tokenizer, classnames: list[str], templates: list[str],
                          runtime: Runtime, desc: str = "class prompts") -> torch.Tensor:
    """[C, ...]: one representation per class, from len(templates) prompts each."""
    prompts = [fill(template, name) for name in classnames for template in templates]
    per_prompt = runtime.encode_texts(model, tokenizer, prompts, desc)
    per_class = per_prompt.unflatten(0, (len(classnames), len(templates)))
    with torch.no_grad():
        return torch.stack([model.combine_templates(reprs.float()) for reprs in per_class])


def evaluate_zeroshot(model: EvaluableModel, tokenizer: Tokenizer, data: ClassificationSet, runtime: Runtime,
                      desc: str = "zeroshot") -> dict[str, float]:
    """top1, top5, mean_per_class_recall (see eval.metrics) and num_images."""
    classes = class_representations(model, tokenizer, data.classnames, data.templates, runtime, f"{desc} prompts")
    loader = runtime.loader(data.images)
    total = len(loader) if data.num_images is not None else None
    ranks, predictions, targets = [], [], []
    for images, labels in runtime.bar(loader, f"{desc} images", total=total):
        logits = runtime.scores(model, runtime.encode_images(model, images), classes)
        check_finite(logits, f"{data.source}, {len(classes)} classes")
        labels = torch.tensor(labels)
        ranks.append(target_ranks(logits, labels))
        predictions.append(logits.argmax(1))
        targets.append(labels)
    if not targets:
        raise EvalError(f"{data.source} yielded no images")
    metrics = classification_metrics(torch.cat(predictions), torch.cat(ranks), torch.cat(targets), len(classes))
    metrics["num_images"] = float(sum(len(t) for t in targets))
    return metrics


WORDNET_ID = re.compile(r"^n\d{8}$")


@dataclass
class ClassificationSet:
    source: Path
    classnames: list[str]
    templates: list[str]
    images: Dataset  # (uint8 image, label)
    num_images: Optional[int]  # None when streamed from shards


def open_classification_set(path: str | os.PathLike, image_size: int, templates: str = "openai",
                            split: str = "test", resize: str = "crop") -> ClassificationSet:
    """`templates` names the shipped set ("openai": 80, "simple": 7) used when the dataset brings none."""
    root = Path(path)
    if not root.is_dir():
        raise EvalError(f"zero-shot dataset {root} does not exist or is not a directory; expected an ImageFolder "
                        f"tree (CLASS/IMAGE.jpg) or WebDataset shards ({split}/0.tar ...)")
    transform = eval_transform(image_size, resize)
    shards = find_shards(root, split)
    if shards is not None:
        return _from_shards(root, shards, transform, templates)
    return _from_image_folder(root, transform, templates)


def _from_image_folder(root: Path, transform: ImageTransform, templates: str) -> ClassificationSet:
    class_dirs = sorted((e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")))
    if not class_dirs:
        raise EvalError(f"{root} has no class folders and no .tar shards; expected an ImageFolder tree "
                        f"(CLASS/IMAGE.jpg) or WebDataset shards")
    items = []
    for label, name in enumerate(class_dirs):
        files = sorted(e.name for e in os.scandir(root / name) if e.is_file() and is_image_file(e.name))
        if not files:
            raise EvalError(f"class folder {root / name} has no images (expected files ending in "
                            f"{', '.join(IMAGE_FILE_SUFFIXES)}); if {root} is a dataset root, name its split folder")
        items += [(root / name / f, label) for f in files]
    template_file = root / "templates.txt"
    return ClassificationSet(
        source=root,
        classnames=_folder_classnames(root, class_dirs),
        templates=read_templates(template_file) if template_file.is_file() else template_set(templates),
        images=ImageFiles(items, transform),
        num_images=len(items),
    )


def _folder_classnames(root: Path, class_dirs: list[str]) -> list[str]:
    listed = root / "classnames.txt"
    if listed.is_file():
        names = read_lines(listed, "class-name")
        if len(names) != len(class_dirs):
            raise EvalError(f"{listed} has {len(names)} class names but {root} has {len(class_dirs)} class folders")
        return names
    if all(WORDNET_ID.match(d) for d in class_dirs):
        if len(class_dirs) != 1000:
            raise EvalError(f"{root} has {len(class_dirs)} WordNet-id folders, not ImageNet's 1000; put their names "
                            f"in {listed} (one per line, in sorted folder order)")
        return imagenet_classnames()
    return [d.replace("_", " ") for d in class_dirs]


def _from_shards(root: Path, shards: list[Path], transform: ImageTransform, templates: str) -> ClassificationSet:
    kind = dataset_type(root)
    if kind != "classification":
        raise EvalError(f"{root / 'dataset_type.txt'} says {kind!r}; a zero-shot classification set is expected "
                        f"here (retrieval sets go under eval.retrieval)")
    classnames_file = sidecar(shards, root, "classnames.txt")
    if classnames_file is None:
        raise EvalError(f"{root} has shards but no classnames.txt (one class name per line, in label order)")
    classnames = read_lines(classnames_file, "class-name")
    template_file = sidecar(shards, root, "zeroshot_classification_templates.txt")
    return ClassificationSet(
        source=root,
        classnames=classnames,
        templates=read_templates(template_file) if template_file is not None else template_set(templates),
        images=ShardSamples(shards, transform, partial(_labelled_sample, num_classes=len(classnames))),
        num_images=None,
    )


def _labelled_sample(fields: dict[str, bytes], name: str, order: tuple[int, int],
                     num_classes: int) -> tuple[bytes, int]:
    text = text_field(fields, "cls", name).strip()
    if not text.isdigit() or int(text) >= num_classes:
        raise EvalError(f"sample {name}: .cls is {text!r}; expected a label in 0..{num_classes - 1}")
    return image_field(fields, name), int(text)
