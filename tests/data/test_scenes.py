import random

import pytest

from data.captions import SHAPE_WORDS, attribute_captions, relation_captions
from data.scenes import INVERSE_RELATION, MARGIN, RELATIONS, SHAPES, random_scene, render


@pytest.mark.parametrize("relation", RELATIONS)
def test_related_pairs_are_placed_clearly_inside_and_apart(relation):
    for i in range(200):
        scene = random_scene(random.Random(i), 2, relation=relation)
        a, b = scene.objects
        assert scene.relation() == relation
        for obj in (a, b):
            assert obj.radius + MARGIN <= obj.x <= 1 - obj.radius - MARGIN + 1e-9
            assert obj.radius + MARGIN <= obj.y <= 1 - obj.radius - MARGIN + 1e-9
        assert ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5 >= a.radius + b.radius + MARGIN - 1e-9


def _mention(caption, obj):
    found = [caption.find(f"{obj.colour} {word}") for word in SHAPE_WORDS[obj.shape]]
    return min(i for i in found if i >= 0)


def _relation_word(text):
    for word, relation in (("left", "left of"), ("right", "right of"), ("above", "above"), ("over", "above"),
                           ("below", "below"), ("under", "below"), ("beneath", "below")):
        if word in text.split():
            return relation
    raise AssertionError(f"no relation in {text!r}")


def test_relation_captions_are_true_of_the_scene():
    for i in range(100):
        rng = random.Random(i)
        relation = rng.choice(RELATIONS)
        scene = random_scene(rng, 2, relation=relation)
        a, b = scene.objects
        for caption in relation_captions(rng, scene, 5):
            first, second = sorted((a, b), key=lambda obj: _mention(caption, obj))
            said = _relation_word(caption[_mention(caption, first):_mention(caption, second)])
            assert said == (relation if first is a else INVERSE_RELATION[relation]), caption


def test_attribute_captions_name_every_object_and_fixed_attributes_are_kept():
    for i in range(100):
        rng = random.Random(i)
        scene = random_scene(rng, 1 + i % 3)
        for caption in attribute_captions(rng, scene, 5):
            for obj in scene.objects:
                assert obj.colour in caption and any(w in caption for w in SHAPE_WORDS[obj.shape]), caption
    fixed = random_scene(random.Random(0), 2, shapes=["star", "cross"], colours=["red", "blue"])
    assert [(o.shape, o.colour) for o in fixed.objects] == [("star", "red"), ("cross", "blue")]


def test_render_draws_each_shape_in_its_colour_on_the_background():
    for shape in SHAPES:
        scene = random_scene(random.Random(1), 1, shapes=[shape], colours=["red"])
        image = render(scene, 32)
        obj = scene.objects[0]
        centre = image.getpixel((int(obj.x * 32), int(obj.y * 32)))
        corner = image.getpixel((0, 0)) if obj.x > 0.3 or obj.y > 0.3 else image.getpixel((31, 31))
        assert image.size == (32, 32)
        assert max(abs(c - o) for c, o in zip(centre, obj.rgb)) <= 2, shape
        assert corner == scene.background_rgb
