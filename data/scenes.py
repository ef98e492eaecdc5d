"""Procedural scenes for the demo dataset: coloured shapes on a plain background, drawn with PIL.

A scene is 1-3 objects, each a shape with a colour, a size and a position, on a background
colour. Everything is drawn from a `random.Random` the caller seeds, so a scene (and its
pixels) is a pure function of that seed. Colours are jittered a little per object so that
pixels vary between scenes with the same attributes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

from PIL import Image, ImageDraw

# Every word starts with a consonant, so captions and prompt templates can always say "a".
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "cyan": (40, 200, 215), "yellow": (240, 215, 40), "green": (45, 165, 60),
    "blue": (40, 90, 225), "purple": (135, 55, 190), "pink": (245, 135, 195), "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128), "black": (22, 22, 22), "beige": (220, 205, 170), "brown": (105, 65, 35),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
SIZES: dict[str, tuple[float, float]] = {"small": (0.10, 0.15), "large": (0.22, 0.29)}  # radius / image side
RELATIONS = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COLOUR_JITTER = 18  # per channel, objects
BACKGROUND_JITTER = 8  # per channel: enough to vary pixels, too little to change the colour's name
ROTATION_JITTER_DEG = 12.0
MARGIN = 0.02  # free space kept between objects and around the image border (fraction of the side)
MAX_CROSS_OFFSET = 0.15  # two related objects: offset across the relation axis (fraction of the side)
SUPERSAMPLE = 4  # drawn at 4x and box-filtered down: anti-aliased edges


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    x: float  # centre, as a fraction of the image side (0 = left)
    y: float  # centre, as a fraction of the image side (0 = top)
    radius: float  # circumradius, as a fraction of the image side
    rotation: float  # degrees
    rgb: tuple[int, int, int]

    def position(self) -> str:
        """The 3x3 grid cell of the centre: "top left", "top", ..., "centre", ..., "bottom right"."""
        row = ("top", "", "bottom")[min(int(self.y * 3), 2)]
        col = ("left", "", "right")[min(int(self.x * 3), 2)]
        return " ".join(p for p in (row, col) if p) or "centre"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    background_rgb: tuple[int, int, int]

    def relation(self) -> Optional[str]:
        """For two objects: where objects[0] lies relative to objects[1] (see `relation_between`)."""
        if len(self.objects) != 2:
            return None
        a, b = self.objects
        return relation_between((a.x, a.y), (b.x, b.y))


def relation_between(a: tuple[float, float], b: tuple[float, float]) -> Optional[str]:
    """How centre `a` lies relative to centre `b` when one axis clearly dominates (offset at
    least twice the other): "left of", "right of", "above", "below"; else None."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= 2 * abs(dy):
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= 2 * abs(dx):
        return "above" if dy < 0 else "below"
    return None


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore


def _object(rng: random.Random, shape: str, colour: str, size: str, x: float, y: float, radius: float) -> SceneObject:
    rotation = rng.uniform(-ROTATION_JITTER_DEG, ROTATION_JITTER_DEG)
    return SceneObject(shape, colour, size, x, y, radius, rotation, _jitter(rng, COLOURS[colour], COLOUR_JITTER))


def _place(rng: random.Random, radii: list[float], tries: int = 100) -> Optional[list[tuple[float, float]]]:
    """Centres for circles of these radii, inside the image and apart (rejection sampling).
    None if no placement was found: the caller draws smaller sizes."""
    for _ in range(tries):
        centres = [(rng.uniform(r + MARGIN, 1 - r - MARGIN), rng.uniform(r + MARGIN, 1 - r - MARGIN)) for r in radii]
        if all(math.dist(centres[i], centres[j]) >= radii[i] + radii[j] + MARGIN
               for i in range(len(radii)) for j in range(i)):
            return centres
    return None


def _place_pair(rng: random.Random, radius_a: float, radius_b: float,
                relation: str) -> Optional[list[tuple[float, float]]]:
    """Centres of two circles where the first lies `relation` of the second, clearly (the gap
    along the axis is at least twice the offset across it), built directly rather than by rejection."""
    if relation in ("right of", "below"):  # the mirror image of left of / above
        centres = _place_pair(rng, radius_b, radius_a, INVERSE_RELATION[relation])
        return centres[::-1] if centres else None
    # "left of" along x, or "above" along y: place along `u` (the axis) and `v` (across it)
    low_a, high_a = radius_a + MARGIN, 1 - radius_a - MARGIN
    low_b, high_b = radius_b + MARGIN, 1 - radius_b - MARGIN
    v_a = rng.uniform(low_a, high_a)
    v_low, v_high = max(low_b, v_a - MAX_CROSS_OFFSET), min(high_b, v_a + MAX_CROSS_OFFSET)
    if v_low > v_high:
        return None
    v_b = rng.uniform(v_low, v_high)
    min_gap = max(radius_a + radius_b + MARGIN, 2 * abs(v_a - v_b))
    max_gap = high_b - low_a
    if max_gap < min_gap:
        return None
    gap = rng.uniform(min_gap, max_gap)
    u_a = rng.uniform(low_a, high_b - gap)
    u_b = u_a + gap
    return [(u_a, v_a), (u_b, v_b)] if relation == "left of" else [(v_a, u_a), (v_b, u_b)]


def random_scene(rng: random.Random, num_objects: int, shapes: Optional[list[str]] = None,
                 colours: Optional[list[str]] = None, relation: Optional[str] = None) -> Scene:
    """A scene with `num_objects` objects of distinct (colour, shape); `shapes`/`colours` fix them
    per object (None: random); `relation` (two objects only) fixes where the first lies."""
    while True:
        pairs: list[tuple[str, str]] = []
        for i in range(num_objects):
            shape = shapes[i] if shapes else rng.choice(SHAPES)
            colour = colours[i] if colours else rng.choice(list(COLOURS))
            pairs.append((shape, colour))
        if len(set(pairs)) < num_objects:
            continue
        sizes = [rng.choice(list(SIZES)) for _ in range(num_objects)]
        radii = [rng.uniform(*SIZES[s]) for s in sizes]
        centres = _place(rng, radii) if relation is None else _place_pair(rng, *radii, relation)
        if centres is None:
            continue  # sizes too large to fit this way: draw again
        background = rng.choice(list(BACKGROUNDS))
        objects = tuple(_object(rng, shape, colour, size, x, y, r)
                        for (shape, colour), size, (x, y), r in zip(pairs, sizes, centres, radii))
        return Scene(objects, background, _jitter(rng, BACKGROUNDS[background], BACKGROUND_JITTER))


def _polygon(obj: SceneObject, side: int) -> list[tuple[float, float]]:
    cx, cy, r = obj.x * side, obj.y * side, obj.radius * side
    if obj.shape == "square":
        corners = [(45 + 90 * k, r) for k in range(4)]
    elif obj.shape == "triangle":
        corners = [(-90 + 120 * k, r) for k in range(3)]
        cy += 0.25 * r  # centre the triangle's bounding box rather than its centroid
    elif obj.shape == "star":
        corners = [(-90 + 36 * k, r if k % 2 == 0 else 0.45 * r) for k in range(10)]
    elif obj.shape == "hexagon":
        corners = [(60 * k, r) for k in range(6)]
    elif obj.shape == "cross":
        half_width = 0.3  # of r: arms 0.6 r wide
        arm, tip = math.degrees(math.atan(half_width)), r * math.hypot(1, half_width)
        corners = []
        for k in range(4):
            corners += [(90 * k - arm, tip), (90 * k + arm, tip), (90 * k + 45, r * half_width * math.sqrt(2))]
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    return [(cx + rr * math.cos(math.radians(a + obj.rotation)), cy + rr * math.sin(math.radians(a + obj.rotation)))
            for a, rr in corners]


def render(scene: Scene, image_size: int) -> Image.Image:
    side = image_size * SUPERSAMPLE
    image = Image.new("RGB", (side, side), scene.background_rgb)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        if obj.shape == "circle":
            cx, cy, r = obj.x * side, obj.y * side, obj.radius * side
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=obj.rgb)
        else:
            draw.polygon(_polygon(obj, side), fill=obj.rgb)
    return image.reduce(SUPERSAMPLE)
