"""The embedded demo dataset (`contrastive data synth OUT`): rendered shape scenes, no download.

    OUT/train/shard-000000.tar ...      training shards (img2dataset layout), 5 captions per image
    OUT/tokenizer.json                  byte-level BPE trained on every caption and prompt below
    OUT/eval/zeroshot_attributes/       ImageFolder (one object; class = colour + shape)
    OUT/eval/zeroshot_relations/        ImageFolder (two objects; class = "circle left of a square")
    OUT/eval/retrieval_attributes/      images/ + Karpathy-style dataset.json, 5 captions per image
    OUT/eval/retrieval_relations/       same, with relation captions
    OUT/eval/linear_probe_attributes/   train/ (images of its own, twice as many) and test/ (zeroshot_attributes'
                                        images), both ImageFolders like zeroshot_attributes
    OUT/eval/hard_negatives/            images/ + SugarCrepe-layout CATEGORY.json: two-object scenes, each with its
                                        caption and one hard negative (colours or objects swapped, relation or
                                        shape replaced)
    OUT/info.json, OUT/README.md        what was generated: counts, classes, chance levels, seed

Every sample is a pure function of (seed, split, index): each split draws from its own seed
stream, so the evaluation sets are held out from training, and the same seed gives
byte-identical files. OUT is built beside itself (`OUT.partial`) and moved into place when
complete; an existing synth output at OUT is replaced, anything else there is left alone. A stopped
run leaves OUT as it was and its unfinished `OUT.partial` (stopped in the renames that replace OUT:
`OUT.old` too); the next run deletes both first.
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from data.atomic import atomic_write_text
from data.captions import (ATTRIBUTE_TEMPLATES, RELATION_TEMPLATES, RELATION_WORDS, SHAPE_WORDS, attribute_captions,
                           relation_captions, relation_class)
from data.errors import DataError
from data.plural import count
from data.progress import bar
from data.scenes import (BACKGROUNDS, COLOURS, INVERSE_RELATION, RELATIONS, SHAPES, SIZES, Scene, random_scene,
                         render)
from data.shards import ShardWriter, sample_key, shard_name
from data.tokenizer import train_bpe

GENERATOR = "contrastive data synth"
OBJECT_COUNT_WEIGHTS = {1: 0.5, 2: 0.35, 3: 0.15}
CAPTIONS_PER_IMAGE = 5
RELATION_CAPTIONS_PER_PAIR = 2  # of the 5 training captions of a two-object image; the rest name attributes
ZEROSHOT_RELATIONS = ("left of", "above")  # with every ordered shape pair, each image has exactly one true class
PROBE_TRAIN_IMAGES_PER_TEST_IMAGE = 2  # the linear probe's train split, per image of zeroshot_attributes
# SugarCrepe's categories (Hsieh et al., 2023) that two-object scenes can make: what the negative caption changes
HARD_NEGATIVE_CATEGORIES = {
    "swap_att": "the two objects' colours swapped",
    "swap_obj": "the two objects swapped",
    "replace_rel": "the relation replaced by its inverse",
    "replace_obj": "one shape replaced by a shape not in the scene",
}


def _rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random(f"{seed}/{split}/{index}")  # str seeds hash with SHA-512: stable across runs


def _png(scene: Scene, image_size: int) -> bytes:
    buffer = io.BytesIO()
    render(scene, image_size).save(buffer, format="PNG")
    return buffer.getvalue()


def _mixed_scene(rng: random.Random) -> Scene:
    num_objects = rng.choices(list(OBJECT_COUNT_WEIGHTS), weights=list(OBJECT_COUNT_WEIGHTS.values()))[0]
    relation = rng.choice(RELATIONS) if num_objects == 2 else None  # two objects are always clearly placed
    return random_scene(rng, num_objects, relation=relation)


def _metadata(key: str, scene: Scene, captions: list[str]) -> dict:
    return {
        "key": key, "caption": captions[0], "captions": captions, "background": scene.background,
        "relation": scene.relation(),
        "objects": [{k: v for k, v in asdict(obj).items() if k != "rgb"} for obj in scene.objects],
    }


@dataclass
class TrainSample:
    key: str
    members: dict[str, bytes]  # tar members: png, txt, json
    attribute_captions: list[str]
    relation_captions: list[str]


def train_sample(seed: int, index: int, image_size: int) -> TrainSample:
    rng = _rng(seed, "train", index)
    scene = _mixed_scene(rng)
    relations = RELATION_CAPTIONS_PER_PAIR if len(scene.objects) == 2 else 0
    attributes = attribute_captions(rng, scene, CAPTIONS_PER_IMAGE - relations)
    captions = attributes + (relation_captions(rng, scene, relations) if relations else [])
    key = sample_key(index)
    members = {
        "png": _png(scene, image_size),
        "txt": "\n".join(captions).encode("utf-8"),
        "json": json.dumps(_metadata(key, scene, captions), sort_keys=True).encode("utf-8"),
    }
    return TrainSample(key, members, attributes, captions[len(attributes):])


def attribute_classes() -> list[tuple[str, str, str]]:
    """(folder, class name, colour/shape) for zero-shot attributes, in sorted folder order."""
    classes = [(f"{colour}_{shape}", f"{colour} {shape}", (colour, shape)) for colour in COLOURS for shape in SHAPES]
    return sorted(classes)


def relation_classes() -> list[tuple[str, str, tuple[str, str, str]]]:
    """(folder, class name, (shape, relation, shape)) for zero-shot relations, in sorted folder order."""
    classes = []
    for relation in ZEROSHOT_RELATIONS:
        for first in SHAPES:
            for second in SHAPES:
                if first != second:
                    name = relation_class(first, relation, second)
                    classes.append((name.replace(" ", "_"), name, (first, relation, second)))
    return sorted(classes)


def _write_zeroshot(out: Path, split: str, seed: int, images_per_class: int, image_size: int,
                    progress: Optional[bool]) -> list[str]:
    """ImageFolder + classnames.txt + templates.txt; returns the prompts (for the tokenizer)."""
    is_relation = split == "zeroshot_relations"
    classes = relation_classes() if is_relation else attribute_classes()
    templates = RELATION_TEMPLATES if is_relation else ATTRIBUTE_TEMPLATES
    for folder, _, _ in classes:
        (out / folder).mkdir(parents=True)
    images = images_per_class * len(classes)
    for index in bar(range(images), desc=split, progress=progress, unit="image"):
        folder, _, spec = classes[index % len(classes)]
        rng = _rng(seed, split, index)
        if is_relation:
            first, relation, second = spec
            scene = random_scene(rng, 2, shapes=[first, second], relation=relation)
        else:
            colour, shape = spec
            scene = random_scene(rng, 1, shapes=[shape], colours=[colour])
        (out / folder / f"{index:06d}.png").write_bytes(_png(scene, image_size))
    (out / "classnames.txt").write_text("".join(f"{name}\n" for _, name, _ in classes))
    (out / "templates.txt").write_text("".join(f"{t}\n" for t in templates))
    return [t.replace("{c}", name) for _, name, _ in classes for t in templates]


def _write_linear_probe(eval_dir: Path, seed: int, images_per_class: int, image_size: int,
                        progress: Optional[bool]) -> dict:
    """linear_probe_attributes/: train/ drawn like zeroshot_attributes from a stream of its own, test/ a copy of
    zeroshot_attributes (so the probe and zero-shot are scored on the same images); returns its info entry."""
    out = eval_dir / "linear_probe_attributes"
    train_per_class = PROBE_TRAIN_IMAGES_PER_TEST_IMAGE * images_per_class
    # The prompts it returns are zeroshot_attributes' again: the tokenizer's corpus does not take them twice.
    _write_zeroshot(out / "train", "linear_probe_attributes_train", seed, train_per_class, image_size, progress)
    shutil.copytree(eval_dir / "zeroshot_attributes", out / "test")
    num_classes = len(attribute_classes())
    return {"task": "linear_probe", "images": (train_per_class + images_per_class) * num_classes,
            "train_images": train_per_class * num_classes, "test_images": images_per_class * num_classes,
            "classes": num_classes, "chance_top1": 1 / num_classes}


def _karpathy_tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", caption.lower())


def _write_retrieval(out: Path, split: str, seed: int, num_images: int, image_size: int,
                     progress: Optional[bool]) -> list[str]:
    """images/*.png + Karpathy-style dataset.json (split "test"); returns all captions."""
    (out / "images").mkdir(parents=True)
    images, all_captions = [], []
    for index in bar(range(num_images), desc=split, progress=progress, unit="image"):
        rng = _rng(seed, split, index)
        if split == "retrieval_relations":
            scene = random_scene(rng, 2, relation=rng.choice(RELATIONS))
            captions = relation_captions(rng, scene, CAPTIONS_PER_IMAGE)
        else:
            scene = _mixed_scene(rng)
            captions = attribute_captions(rng, scene, CAPTIONS_PER_IMAGE)
        filename = f"{index:06d}.png"
        (out / "images" / filename).write_bytes(_png(scene, image_size))
        sentids = list(range(index * CAPTIONS_PER_IMAGE, (index + 1) * CAPTIONS_PER_IMAGE))
        images.append({
            "filename": filename, "filepath": "images", "split": "test", "imgid": index, "sentids": sentids,
            "sentences": [{"raw": c, "tokens": _karpathy_tokens(c), "imgid": index, "sentid": s}
                          for c, s in zip(captions, sentids)],
        })
        all_captions += captions
    (out / "dataset.json").write_text(json.dumps({"dataset": split, "images": images}, indent=1) + "\n")
    return all_captions


def hard_negative_pair(rng: random.Random, scene: Scene, category: str) -> tuple[str, str]:
    """A true caption of a two-object scene of distinct shapes and colours, and a false one that differs from it
    only as `category` says (HARD_NEGATIVE_CATEGORIES)."""
    a, b = scene.objects
    first, relation, second = a, scene.relation(), b
    if rng.random() < 0.5:  # either object may come first, as in the training captions
        first, relation, second = b, INVERSE_RELATION[relation], a
    colours = [first.colour, second.colour]
    shapes = [rng.choice(SHAPE_WORDS[first.shape]), rng.choice(SHAPE_WORDS[second.shape])]
    rank = rng.randrange(len(RELATION_WORDS[relation]))
    said = RELATION_WORDS[relation][rank]

    def caption(colours: list[str], shapes: list[str], said: str) -> str:
        return f"a {colours[0]} {shapes[0]} {said} a {colours[1]} {shapes[1]}"

    if category == "swap_att":
        negative = caption(colours[::-1], shapes, said)
    elif category == "swap_obj":
        negative = caption(colours[::-1], shapes[::-1], said)
    elif category == "replace_rel":  # the inverse's wording of the same rank: "to the left of" -> "to the right of"
        inverse = RELATION_WORDS[INVERSE_RELATION[relation]]
        negative = caption(colours, shapes, inverse[min(rank, len(inverse) - 1)])
    elif category == "replace_obj":
        replaced = list(shapes)
        absent = [shape for shape in SHAPES if shape not in (first.shape, second.shape)]
        replaced[rng.randrange(2)] = rng.choice(SHAPE_WORDS[rng.choice(absent)])
        negative = caption(colours, replaced, said)
    else:
        raise ValueError(f"unknown hard-negative category {category!r}; known: {', '.join(HARD_NEGATIVE_CATEGORIES)}")
    return caption(colours, shapes, said), negative


def _write_hard_negatives(out: Path, seed: int, images_per_category: int, image_size: int,
                          progress: Optional[bool]) -> list[str]:
    """images/*.png + one SugarCrepe-layout CATEGORY.json per category ({ID: {filename, caption, negative_caption}});
    each category draws its own scenes (split hard_negatives_CATEGORY). Returns every caption."""
    (out / "images").mkdir(parents=True)
    all_captions = []
    for category in HARD_NEGATIVE_CATEGORIES:
        split = f"hard_negatives_{category}"
        entries = {}
        for index in bar(range(images_per_category), desc=split, progress=progress, unit="image"):
            rng = _rng(seed, split, index)
            shapes, colours = rng.sample(SHAPES, 2), rng.sample(list(COLOURS), 2)
            scene = random_scene(rng, 2, shapes=shapes, colours=colours, relation=rng.choice(RELATIONS))
            caption, negative = hard_negative_pair(rng, scene, category)
            filename = f"{category}_{index:06d}.png"
            (out / "images" / filename).write_bytes(_png(scene, image_size))
            entries[str(index)] = {"filename": filename, "caption": caption, "negative_caption": negative}
            all_captions += [caption, negative]
        (out / f"{category}.json").write_text(json.dumps(entries, indent=1) + "\n")
    return all_captions


def _replaceable(out: Path) -> bool:
    """OUT may be replaced: it does not exist, is empty, or holds an earlier synth output."""
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    return not any(out.iterdir()) or _is_synth_output(out)


def _is_synth_output(out: Path) -> bool:
    try:
        return json.loads((out / "info.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError):
        return False


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _old(out: Path) -> Path:
    return out.with_name(out.name + ".old")


def _move_into_place(partial: Path, out: Path) -> None:
    os.sync()  # the rename below must not publish files whose data is not yet on disk
    if out.exists():
        os.replace(out, _old(out))
        os.replace(partial, out)
        shutil.rmtree(_old(out))
    else:
        os.replace(partial, out)


def describe_stopped(out: str | os.PathLike) -> str:
    """What a stopped synth left at `out` and what to do next, for the one line the command prints."""
    out = Path(out)
    if _old(out).exists():
        left = " and ".join(p.name for p in (_partial(out), _old(out)) if p.exists())
        return (f"the stop came as {out} was being replaced; running the same command again deletes {left} and "
                f"builds {out} from the start")
    if _partial(out).exists():
        return (f"{out} is as it was; the unfinished build in {_partial(out)} is deleted when you run the same "
                f"command again, which builds {out} from the start")
    if _is_synth_output(out):
        return f"{out} holds a complete synth output; nothing is left to clean up"
    return f"nothing was written to {out}; run the same command again to build it"


def synthesize(out: str | os.PathLike, seed: int = 0, train_samples: int = 8000, samples_per_shard: int = 1000,
               image_size: int = 64, images_per_class: int = 12, retrieval_images: int = 500,
               vocab_size: int = 1000, progress: Optional[bool] = None, hard_negative_images: int = 100) -> dict:
    """Write the demo dataset to `out` and return its info.json content. `progress`: None shows
    progress bars only on a terminal. `hard_negative_images` is per hard-negative category."""
    out = Path(out)
    if min(train_samples, samples_per_shard, image_size, images_per_class, retrieval_images,
           hard_negative_images) < 1:
        raise DataError("synth: sample counts, images per class and image size must be positive")
    if image_size < 16:
        raise DataError(f"synth: image size must be at least 16 px to draw recognisable shapes, got {image_size}")
    if not _replaceable(out):
        raise DataError(f"{out} exists and is not an earlier synth output (no info.json from {GENERATOR}); "
                        f"choose a new directory")
    partial = _partial(out)
    for leftover in (partial, _old(out)):  # of a run that was stopped or killed
        shutil.rmtree(leftover, ignore_errors=True)
    partial.mkdir(parents=True)

    all_captions: list[str] = []
    caption_lines = {"attribute": 0, "relation": 0}
    with ShardWriter(partial / "train", max_samples=samples_per_shard) as writer:
        for index in bar(range(train_samples), desc="train", progress=progress):
            sample = train_sample(seed, index, image_size)
            writer.write(sample.key, sample.members)
            all_captions += sample.attribute_captions + sample.relation_captions
            caption_lines["attribute"] += len(sample.attribute_captions)
            caption_lines["relation"] += len(sample.relation_captions)
    num_shards = len(writer.shards)

    eval_info = {}
    for split in ("zeroshot_attributes", "zeroshot_relations"):
        all_captions += _write_zeroshot(partial / "eval" / split, split, seed, images_per_class, image_size, progress)
        num_classes = len(relation_classes() if split == "zeroshot_relations" else attribute_classes())
        eval_info[split] = {"task": "zeroshot", "images": images_per_class * num_classes, "classes": num_classes,
                            "chance_top1": 1 / num_classes}
    eval_info["linear_probe_attributes"] = _write_linear_probe(partial / "eval", seed, images_per_class, image_size,
                                                               progress)
    for split in ("retrieval_attributes", "retrieval_relations"):
        all_captions += _write_retrieval(partial / "eval" / split, split, seed, retrieval_images, image_size, progress)
        eval_info[split] = {"task": "retrieval", "images": retrieval_images,
                            "captions": retrieval_images * CAPTIONS_PER_IMAGE,
                            "chance_t2i_R@1": 1 / retrieval_images}
    all_captions += _write_hard_negatives(partial / "eval" / "hard_negatives", seed, hard_negative_images, image_size,
                                          progress)
    eval_info["hard_negatives"] = {"task": "hard_negatives",
                                   "images": hard_negative_images * len(HARD_NEGATIVE_CATEGORIES),
                                   "categories": {c: hard_negative_images for c in HARD_NEGATIVE_CATEGORIES},
                                   "chance_accuracy": 0.5}  # a random scorer's: one negative per image

    train_bpe(all_captions, vocab_size, partial / "tokenizer.json")
    tokenizer_vocab = len(json.loads((partial / "tokenizer.json").read_text())["model"]["vocab"])
    info = {
        "generator": GENERATOR, "seed": seed, "image_size": image_size,
        "train": {"samples": train_samples, "shards": num_shards,
                  "pattern": f"train/shard-{{{shard_name(0)[6:12]}..{shard_name(num_shards - 1)[6:12]}}}.tar",
                  "captions_per_image": CAPTIONS_PER_IMAGE, "caption_lines": caption_lines,
                  "objects_per_image": {str(k): v for k, v in OBJECT_COUNT_WEIGHTS.items()}},
        "eval": eval_info,
        "tokenizer": {"file": "tokenizer.json", "bpe_vocab_size": tokenizer_vocab},
        "vocabulary": {"shapes": list(SHAPES), "colours": list(COLOURS), "sizes": list(SIZES),
                       "backgrounds": list(BACKGROUNDS), "relations": list(RELATIONS)},
    }
    atomic_write_text(partial / "info.json", json.dumps(info, indent=1) + "\n")
    atomic_write_text(partial / "README.md", _readme(info))
    _move_into_place(partial, out)
    return info


def _readme(info: dict) -> str:
    train, vocabulary = info["train"], info["vocabulary"]
    lines = [
        "# Synthetic shapes: the demo dataset",
        "",
        f"Generated by `{GENERATOR} --seed {info['seed']}` ({info['image_size']}x{info['image_size']} px PNG). "
        "Same seed, same bytes.",
        "",
        f"Scenes: 1-3 objects (weights {train['objects_per_image']}), shapes {', '.join(vocabulary['shapes'])}; "
        f"colours {', '.join(vocabulary['colours'])}; sizes {', '.join(vocabulary['sizes'])}; "
        f"backgrounds {', '.join(vocabulary['backgrounds'])}.",
        "",
        f"- `train/`: {count(train['samples'], 'sample')} in {count(train['shards'], 'shard')} (`{train['pattern']}`), "
        f"{train['captions_per_image']} caption lines per image in KEY.txt: "
        f"{train['caption_lines']['attribute']} attribute captions, {train['caption_lines']['relation']} relation "
        "captions (two-object images); KEY.json holds the scene (objects, positions, background).",
        f"- `tokenizer.json`: byte-level BPE trained on every caption and prompt here "
        f"({info['tokenizer']['bpe_vocab_size']} tokens).",
    ]
    for split, item in info["eval"].items():
        if item["task"] == "zeroshot":
            lines.append(f"- `eval/{split}/`: zero-shot classification, ImageFolder with classnames.txt and "
                         f"templates.txt; {item['images']} images, {item['classes']} classes, "
                         f"chance top-1 {item['chance_top1']:.2%}.")
        elif item["task"] == "retrieval":
            lines.append(f"- `eval/{split}/`: retrieval, images/ + dataset.json (Karpathy format, split test); "
                         f"{item['images']} images, {item['captions']} captions, "
                         f"chance text-to-image R@1 {item['chance_t2i_R@1']:.2%}.")
        elif item["task"] == "linear_probe":
            lines.append(f"- `eval/{split}/`: linear probe, train/ and test/ ImageFolders with classnames.txt; "
                         f"{item['train_images']} train images of their own, test/ the {item['test_images']} images "
                         f"of zeroshot_attributes; {item['classes']} classes, chance top-1 {item['chance_top1']:.2%}.")
        elif item["task"] == "hard_negatives":
            lines.append(f"- `eval/{split}/`: compositional hard negatives, images/ + SugarCrepe-layout "
                         f"CATEGORY.json ({{ID: {{filename, caption, negative_caption}}}}); two-object scenes, "
                         + "; ".join(f"{category}: {item['categories'][category]} images, "
                                     f"{HARD_NEGATIVE_CATEGORIES[category]}" for category in item["categories"])
                         + f"; chance {item['chance_accuracy']:.0%} (a tie counts as wrong).")
    lines += ["", "Attribute sets are meant to be learned by a tiny CLIP in minutes; relation sets are a harder "
              "probe (a bag-of-words model cannot tell `circle left of a square` from `square left of a circle`).", ""]
    return "\n".join(lines)
