"""Captions for procedural scenes (data/scenes.py): paraphrases generated from the attributes.

Attribute captions name every object's colour and shape (and sometimes its size, position or
the background); relation captions say where one of two objects lies relative to the other.
Every caption is true of its scene. Wording is drawn from the caller's `random.Random`.
"""
from __future__ import annotations

import random
from typing import Callable

from data.scenes import INVERSE_RELATION, Scene, SceneObject

SHAPE_WORDS = {
    "circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",), "star": ("star",),
    "hexagon": ("hexagon",), "cross": ("cross", "plus sign"),
}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
RELATION_WORDS = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
POSITION_WORDS = {
    "top left": "in the top left corner", "top": "at the top", "top right": "in the top right corner",
    "left": "on the left", "centre": "in the centre", "right": "on the right",
    "bottom left": "in the bottom left corner", "bottom": "at the bottom", "bottom right": "in the bottom right corner",
}
COUNT_WORDS = {2: "two", 3: "three"}
# Zero-shot prompts; `{c}` is a class name such as "red circle" or "circle left of a square".
ATTRIBUTE_TEMPLATES = ("a {c}", "a picture of a {c}", "a {c} on a background", "one {c}")
RELATION_TEMPLATES = ("a {c}", "a picture of a {c}", "a {c} on a background")


def attribute_class(obj: SceneObject) -> str:
    return f"{obj.colour} {obj.shape}"


def relation_class(first: str, relation: str, second: str) -> str:
    return f"{first} {relation} a {second}"


def _distinct(rng: random.Random, make: Callable[[], str], count: int) -> list[str]:
    captions: list[str] = []
    for _ in range(100 * count):
        caption = make()
        if caption not in captions:
            captions.append(caption)
            if len(captions) == count:
                return captions
    raise ValueError(f"could not phrase {count} distinct captions")


def _phrase(rng: random.Random, obj: SceneObject, with_size: bool) -> str:
    shape = rng.choice(SHAPE_WORDS[obj.shape])
    return f"a {rng.choice(SIZE_WORDS[obj.size])} {obj.colour} {shape}" if with_size else f"a {obj.colour} {shape}"


def _single_object_caption(rng: random.Random, scene: Scene) -> str:
    obj = scene.objects[0]
    size, shape, bg = rng.choice(SIZE_WORDS[obj.size]), rng.choice(SHAPE_WORDS[obj.shape]), scene.background
    return rng.choice((
        f"a {size} {obj.colour} {shape} on a {bg} background",
        f"a {obj.colour} {shape}",
        f"a {obj.colour} {shape} on a {bg} background",
        f"{obj.colour} {shape} on a {bg} background",
        f"a {size} {obj.colour} {shape}",
        f"{size} {obj.colour} {shape}",
        f"a {obj.colour} {shape} {POSITION_WORDS[obj.position()]}",
        f"a picture of a {size} {obj.colour} {shape}",
        f"one {obj.colour} {shape} on a {bg} background",
        f"a {size} {shape} in {obj.colour}",
    ))


def _multi_object_caption(rng: random.Random, scene: Scene) -> str:
    with_size = rng.random() < 0.5
    phrases = [_phrase(rng, obj, with_size) for obj in rng.sample(scene.objects, len(scene.objects))]
    listed = f"{', '.join(phrases[:-1])} and {phrases[-1]}"
    return rng.choice((
        listed,
        f"{listed} on a {scene.background} background",
        f"{COUNT_WORDS[len(phrases)]} shapes: {listed}",
        f"a picture of {listed}",
    ))


def attribute_captions(rng: random.Random, scene: Scene, count: int) -> list[str]:
    make = _single_object_caption if len(scene.objects) == 1 else _multi_object_caption
    return _distinct(rng, lambda: make(rng, scene), count)


def relation_captions(rng: random.Random, scene: Scene, count: int) -> list[str]:
    """Captions of a two-object scene whose relation is clear (Scene.relation() is not None)."""
    relation = scene.relation()
    if relation is None:
        raise ValueError("relation captions need two objects placed in a clear relation")
    a, b = scene.objects

    def make() -> str:
        first, rel, second = (a, relation, b) if rng.random() < 0.5 else (b, INVERSE_RELATION[relation], a)
        with_size = rng.random() < 0.3
        said = f"{_phrase(rng, first, with_size)} {rng.choice(RELATION_WORDS[rel])} {_phrase(rng, second, with_size)}"
        return rng.choice((said, f"{said} on a {scene.background} background", f"a picture of {said}"))

    return _distinct(rng, make, count)
