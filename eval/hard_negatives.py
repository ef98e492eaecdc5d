"""Compositional hard negatives: each image with its true caption and captions that differ from it in one
composition (attributes swapped, an object or a relation replaced, words reordered). An image counts as right when
the model's `logits` score its true caption strictly above every negative; a tie counts as wrong, so a text encoder
blind to word order, which scores a caption and its reordering exactly alike, gets 0 on swaps, not 100%.

Layouts (`path`; images under `images`, by default DIR/images, DIR being the folder of the JSON files):

- SugarCrepe (Hsieh et al., 2023): a folder with any of add_att.json, add_obj.json, replace_att.json,
  replace_obj.json, replace_rel.json, swap_att.json, swap_obj.json (or one such file), each
  {ID: {"filename", "caption", "negative_caption"}}; the image is IMAGES/filename (SugarCrepe's: COCO val2017).
- ARO's VG-Relation and VG-Attribution (Yuksekgonul et al., 2023): visual_genome_relation.json or
  visual_genome_attribution.json (or a folder holding one), a list of {"image_path", "bbox_x", "bbox_y", "bbox_w",
  "bbox_h", "true_caption", "false_caption", and "relation_name" or "attributes": [A, B]}; the image is
  IMAGES/image_path cropped to the box, as ARO crops it.
- Order sets: any other JSON file, a list of {"image", "caption_options": [...], "true_index"}.

Metrics: `accuracy`, the fraction of all images that are right; each SugarCrepe category's by its name (`swap_att`,
...); `macro_accuracy`, the mean over groups of their accuracy, with `num_groups` the groups it averages: SugarCrepe's
categories, ARO's relations but the symmetric ones (its published VG-Relation number), ARO's attribute pairs with at
least 25 images (its VG-Attribution number); `num_images`. Captions are encoded first; then each batch of images is
scored against its own captions, at most `block` (images, captions) per `logits` call, keeping only each image's
scores of its own captions.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

import torch
from torch.utils.data import Dataset

from eval.errors import EvalError
from eval.loading import ImageTransform, Pixels, decode, eval_transform
from eval.metrics import check_finite
from eval.runtime import EvaluableModel, Runtime, Tokenizer
from eval.tasks import Task, register_task

SUGARCREPE_CATEGORIES = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
ARO_FILES = {"visual_genome_relation.json": "vg_relation", "visual_genome_attribution.json": "vg_attribution"}
ARO_MIN_ATTRIBUTE_IMAGES = 25  # VG_Attribution.evaluate_scores leaves out attribute pairs with fewer
# The relations ARO's VG-Relation macro accuracy leaves out, as its notebook "Replicate ARO! VG-Relation,
# VG-Attribution" lists them (github.com/mertyg/vision-language-models-are-bows): swapping their two objects does
# not make the caption false, or not reliably.
ARO_SYMMETRIC_RELATIONS = frozenset((
    "adjusting", "attached to", "between", "bigger than", "biting", "boarding", "brushing", "chewing", "cleaning",
    "climbing", "close to", "coming from", "coming out of", "contain", "crossing", "dragging", "draped over",
    "drinking", "drinking from", "driving", "driving down", "driving on", "eating from", "eating in", "enclosing",
    "exiting", "facing", "filled with", "floating in", "floating on", "flying", "flying above", "flying in",
    "flying over", "flying through", "full of", "going down", "going into", "going through", "grazing in",
    "growing in", "growing on", "guiding", "hanging from", "hanging in", "hanging off", "hanging over",
    "higher than", "holding onto", "hugging", "in between", "jumping off", "jumping on", "jumping over", "kept in",
    "larger than", "leading", "leaning over", "leaving", "licking", "longer than", "looking in", "looking into",
    "looking out", "looking over", "looking through", "lying next to", "lying on top of", "making", "mixed with",
    "mounted on", "moving", "on the back of", "on the edge of", "on the front of", "on the other side of",
    "opening", "painted on", "parked at", "parked beside", "parked by", "parked in", "parked in front of",
    "parked near", "parked next to", "perched on", "petting", "piled on", "playing", "playing in", "playing on",
    "playing with", "pouring", "reaching for", "reading", "reflected on", "riding on", "running in", "running on",
    "running through", "seen through", "sitting behind", "sitting beside", "sitting by", "sitting in front of",
    "sitting near", "sitting next to", "sitting under", "skiing down", "skiing on", "sleeping in", "sleeping on",
    "smiling at", "sniffing", "splashing", "sprinkled on", "stacked on", "standing against", "standing around",
    "standing behind", "standing beside", "standing in front of", "standing near", "standing next to", "staring at",
    "stuck in", "surrounding", "swimming in", "swinging", "talking to", "topped with", "touching", "traveling down",
    "traveling on", "tying", "typing on", "underneath", "wading in", "waiting for", "walking across", "walking by",
    "walking down", "walking next to", "walking through", "working in", "working on", "worn on", "wrapped around",
    "wrapped in", "by", "of", "near", "next to", "with", "beside", "on the side of", "around",
))

Layout = Literal["sugarcrepe", "vg_relation", "vg_attribution", "order"]
Box = tuple[float, float, float, float]  # PIL's crop box: left, top, right, bottom, in pixels


@register_task("hard_negatives")
class HardNegatives(Task):
    """A SugarCrepe folder, an ARO VG-Relation / VG-Attribution file or an order set at `path` (the layouts above),
    its images under `images` (default: images/ beside the JSON files)."""

    metrics = ("accuracy", *SUGARCREPE_CATEGORIES, "macro_accuracy", "num_groups", "num_images")

    def __init__(self, path: str, images: Optional[str] = None):
        self.path, self.images = path, images

    def open(self, pixels: Pixels) -> HardNegativeSet:
        return open_hard_negative_set(self.path, pixels, self.images)

    def run(self, model: EvaluableModel, tokenizer: Tokenizer, data: HardNegativeSet, runtime: Runtime,
            desc: str) -> dict[str, float]:
        return evaluate_hard_negatives(model, tokenizer, data, runtime, desc)


@dataclass(frozen=True)
class Case:
    image: Path
    box: Optional[Box]  # ARO's region of the image; None: the whole image
    captions: tuple[str, ...]  # the true caption first, then its negatives
    group: str  # SugarCrepe's category, ARO's relation or attribute pair; "" in order sets


@dataclass
class HardNegativeSet:
    source: Path
    layout: Layout
    cases: list[Case]
    images: Dataset  # (uint8 image, case index), in case order
    categories: tuple[str, ...]  # the groups reported by name (SugarCrepe's categories present)
    macro_groups: Optional[tuple[str, ...]]  # the groups macro_accuracy averages; None: the layout has no groups


def evaluate_hard_negatives(model: EvaluableModel, tokenizer: Tokenizer, data: HardNegativeSet, runtime: Runtime,
                            desc: str = "hard_negatives") -> dict[str, float]:
    """accuracy, the categories', macro_accuracy and num_groups (where the layout has groups), num_images."""
    counts = [len(case.captions) for case in data.cases]
    first_caption = torch.tensor([0, *counts]).cumsum(0)
    text_repr = runtime.encode_texts(model, tokenizer, [c for case in data.cases for c in case.captions],
                                     f"{desc} captions")
    wins = torch.zeros(len(data.cases), dtype=torch.bool)
    loader = runtime.loader(data.images)
    for images, indices in runtime.bar(loader, f"{desc} images", total=len(loader)):
        rows = torch.cat([torch.arange(first_caption[i], first_caption[i + 1]) for i in indices])
        wins[indices] = true_caption_wins(model, runtime.encode_images(model, images),
                                          text_repr[rows.to(text_repr.device)], [counts[i] for i in indices],
                                          runtime, f"{data.source}, images {indices[0]}..{indices[-1]}")
    return hard_negative_metrics(wins, [case.group for case in data.cases], data.categories, data.macro_groups)


def true_caption_wins(model: EvaluableModel, image_repr: torch.Tensor, text_repr: torch.Tensor,
                      caption_counts: list[int], runtime: Runtime, what: str = "hard negatives") -> torch.Tensor:
    """[B] bool: whether image i scores its true caption strictly above each of its negatives. text_repr holds the
    images' captions image by image, caption_counts[i] of them, the true one first. Consecutive images are scored
    together, at most runtime.block (images, captions) per logits call; of each call's scores only each image's own
    captions' are read."""
    wins = []
    for images, captions in _score_groups(caption_counts, runtime.block):
        scores = runtime.scores(model, image_repr[images], text_repr[captions])
        check_finite(scores, what)
        counts = torch.tensor(caption_counts[images])
        caption_image = torch.repeat_interleave(torch.arange(len(counts)), counts)
        true_column = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
        is_negative = caption_image[None, :] == torch.arange(len(counts))[:, None]
        is_negative[torch.arange(len(counts)), true_column] = False
        best_negative = scores.masked_fill(~is_negative, float("-inf")).amax(1)
        wins.append(scores[torch.arange(len(counts)), true_column] > best_negative)
    return torch.cat(wins)


def _score_groups(caption_counts: list[int], block: tuple[int, int]) -> Iterator[tuple[slice, slice]]:
    """(images, their captions) as consecutive runs of at most block images and block captions (one image with
    more captions than that is a run of its own)."""
    max_images, max_captions = block
    start = caption_start = caption_end = 0
    for image, count in enumerate(caption_counts):
        if image > start and (image - start == max_images or caption_end + count - caption_start > max_captions):
            yield slice(start, image), slice(caption_start, caption_end)
            start, caption_start = image, caption_end
        caption_end += count
    if caption_counts:
        yield slice(start, len(caption_counts)), slice(caption_start, caption_end)


def hard_negative_metrics(wins: torch.Tensor, groups: list[str], categories: tuple[str, ...],
                          macro_groups: Optional[tuple[str, ...]]) -> dict[str, float]:
    """accuracy over all images, each of `categories` over its images, macro_accuracy (the mean of the
    macro_groups' accuracies; left out when there are none) and num_groups, num_images."""
    group_id = {group: i for i, group in enumerate(sorted(set(groups)))}
    ids = torch.tensor([group_id[group] for group in groups])
    right = torch.bincount(ids, weights=wins.double(), minlength=len(group_id))
    accuracy_of = right / torch.bincount(ids, minlength=len(group_id))

    metrics = {"accuracy": wins.double().mean().item()}
    metrics.update({category: accuracy_of[group_id[category]].item() for category in categories})
    if macro_groups is not None:
        if macro_groups:
            metrics["macro_accuracy"] = accuracy_of[[group_id[g] for g in macro_groups]].mean().item()
        metrics["num_groups"] = float(len(macro_groups))
    metrics["num_images"] = float(len(wins))
    return metrics


def open_hard_negative_set(path: str | os.PathLike, pixels: Pixels,
                           images: Optional[str | os.PathLike] = None) -> HardNegativeSet:
    """The set at `path` (a folder or a JSON file, the layouts above), its images under `images` (default:
    images/ beside the JSON files); every image's file is checked to exist, none is decoded."""
    given = Path(path)
    files, layout = _layout_files(given)
    image_root = Path(images) if images is not None else files[0].parent / "images"
    if layout == "sugarcrepe":
        cases = [case for file in files for case in _sugarcrepe_cases(file, image_root)]
        categories: tuple[str, ...] = tuple(file.stem for file in files)
        macro_groups: Optional[tuple[str, ...]] = categories
    elif layout == "order":
        cases, categories, macro_groups = _order_cases(files[0], image_root), (), None
    else:
        cases, categories = _aro_cases(files[0], layout, image_root), ()
        macro_groups = _aro_macro_groups(layout, Counter(case.group for case in cases))
    if not cases:
        raise EvalError(f"hard-negative set {given} holds no entries")
    if not image_root.is_dir():
        hint = "" if images is not None else "; the task's `images` argument names another folder"
        raise EvalError(f"image folder {image_root} of hard-negative set {given} does not exist{hint}")
    missing = sorted({case.image for case in cases if not case.image.is_file()})
    if missing:
        raise EvalError(f"hard-negative set {given}: {len(missing)} image files not found, e.g. {missing[0]}")
    transform = eval_transform(pixels.size, pixels.resize)
    return HardNegativeSet(given, layout, cases, CaseImages(cases, transform), categories, macro_groups)


def _layout_files(given: Path) -> tuple[list[Path], Layout]:
    """The JSON files at `given` and their layout, told by the files' names."""
    expected = (f"a SugarCrepe folder ({', '.join(f'{c}.json' for c in SUGARCREPE_CATEGORIES)}), ARO's "
                f"{' or '.join(ARO_FILES)}, or an order-set JSON file")
    if given.is_file():
        if given.suffix != ".json":
            raise EvalError(f"hard-negative set {given} is not a JSON file; expected {expected}")
        if given.name in ARO_FILES:
            return [given], ARO_FILES[given.name]  # type: ignore[return-value]
        return [given], "sugarcrepe" if given.stem in SUGARCREPE_CATEGORIES else "order"
    if not given.is_dir():
        raise EvalError(f"hard-negative set {given} does not exist; expected {expected}")
    sugarcrepe = [given / f"{c}.json" for c in SUGARCREPE_CATEGORIES if (given / f"{c}.json").is_file()]
    aro = [given / name for name in ARO_FILES if (given / name).is_file()]
    if len(aro) + bool(sugarcrepe) > 1:
        found = [*(f.name for f in aro), *(["SugarCrepe's category files"] if sugarcrepe else [])]
        raise EvalError(f"{given} holds {' and '.join(found)}; name the file to evaluate (one task per set)")
    if aro:
        return aro, ARO_FILES[aro[0].name]  # type: ignore[return-value]
    if sugarcrepe:
        return sugarcrepe, "sugarcrepe"
    raise EvalError(f"{given} holds no hard-negative set; expected {expected}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalError(f"cannot read {path} as JSON: {e}") from None


def _entries(path: Path, data: Any, top: type, layout: str, shape: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(entry id, entry) of a JSON `top` (dict: by key, list: by index), each checked to be an object."""
    if not isinstance(data, top):
        raise EvalError(f"{path} is not in the {layout} layout: expected {shape}")
    for key, entry in (data.items() if isinstance(data, dict) else enumerate(data)):
        if not isinstance(entry, dict):
            raise EvalError(f"{path}: entry {key!r} is not in the {layout} layout: expected an object in {shape}")
        yield str(key), entry


def _field(path: Path, key: str, entry: dict[str, Any], field: str, layout: str,
           check: Callable[[Any], bool] = lambda v: isinstance(v, str) and v.strip() != "",
           expected: str = "a non-empty string") -> Any:
    value = entry.get(field)
    if not check(value):
        raise EvalError(f"{path}: entry {key!r} is not in the {layout} layout: expected {field!r} to be {expected}"
                        f"{'' if field in entry else ' (it is missing)'}")
    return value


def _sugarcrepe_cases(path: Path, image_root: Path) -> list[Case]:
    shape = '{ID: {"filename": ..., "caption": ..., "negative_caption": ...}, ...}'
    cases = []
    for key, entry in _entries(path, _read_json(path), dict, "SugarCrepe", shape):
        filename, caption, negative = (_field(path, key, entry, f, "SugarCrepe")
                                       for f in ("filename", "caption", "negative_caption"))
        cases.append(Case(image_root / filename, None, (caption, negative), path.stem))
    if not cases:
        raise EvalError(f"{path} holds no entries (a SugarCrepe category needs at least one to be reported)")
    return cases


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _aro_cases(path: Path, layout: Layout, image_root: Path) -> list[Case]:
    group_field = "relation_name" if layout == "vg_relation" else "attributes"
    name = "ARO VG-Relation" if layout == "vg_relation" else "ARO VG-Attribution"
    shape = (f'a list of {{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption", '
             f'"{group_field}"}}')
    cases = []
    for key, entry in _entries(path, _read_json(path), list, name, shape):
        image = _field(path, key, entry, "image_path", name)
        x, y = (_field(path, key, entry, f, name, _is_number, "a number") for f in ("bbox_x", "bbox_y"))
        w, h = (_field(path, key, entry, f, name, lambda v: _is_number(v) and v > 0, "a positive number")
                for f in ("bbox_w", "bbox_h"))
        captions = tuple(_field(path, key, entry, f, name) for f in ("true_caption", "false_caption"))
        if layout == "vg_relation":
            group = _field(path, key, entry, "relation_name", name)
        else:
            pair = _field(path, key, entry, "attributes", name,
                          lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(a, str) for a in v),
                          "a list of two strings")
            group = f"{pair[0]}_{pair[1]}"  # ARO's key for an attribute pair
        cases.append(Case(image_root / image, (x, y, x + w, y + h), captions, group))
    return cases


def _aro_macro_groups(layout: Layout, images_per_group: Counter[str]) -> tuple[str, ...]:
    if layout == "vg_relation":
        return tuple(sorted(g for g in images_per_group if g not in ARO_SYMMETRIC_RELATIONS))
    return tuple(sorted(g for g, n in images_per_group.items() if n >= ARO_MIN_ATTRIBUTE_IMAGES))


def _order_cases(path: Path, image_root: Path) -> list[Case]:
    shape = ('a list of {"image": ..., "caption_options": [CAPTION, ...], "true_index": INDEX} (files named after '
             "a SugarCrepe category or ARO's files are read in those layouts)")
    cases = []
    for key, entry in _entries(path, _read_json(path), list, "order-set", shape):
        image = _field(path, key, entry, "image", "order-set")
        options = _field(path, key, entry, "caption_options", "order-set",
                         lambda v: isinstance(v, list) and len(v) >= 2
                         and all(isinstance(c, str) and c.strip() for c in v),
                         "a list of two or more non-empty strings")
        true = _field(path, key, entry, "true_index", "order-set",
                      lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(options),
                      f"an index into caption_options (0..{len(options) - 1})")
        cases.append(Case(image_root / image, None, (options[true], *options[:true], *options[true + 1:]), ""))
    return cases


class CaseImages(Dataset):
    """Each case's image, cropped to its box, made square; with the case's index."""

    def __init__(self, cases: list[Case], transform: ImageTransform):
        self.cases = cases
        self.transform = transform

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        case = self.cases[index]
        image = decode(case.image, str(case.image))
        return self.transform(image.crop(case.box) if case.box is not None else image), index
