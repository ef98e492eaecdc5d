from collections import Counter

import pytest

from eval.errors import EvalError
from eval.prompts import fill, imagenet_classnames, read_templates, template_set


def test_imagenet_classnames_count_and_known_entries():
    names = imagenet_classnames()
    assert len(names) == 1000
    known = {0: "tench", 1: "goldfish", 2: "great white shark", 134: "crane bird", 207: "Golden Retriever",
             281: "tabby cat", 517: "construction crane", 638: "tights", 639: "one-piece bathing suit",
             657: "missile", 744: "missile", 836: "sunglasses", 837: "sunglasses", 954: "banana", 999: "toilet paper"}
    assert {i: names[i] for i in known} == known


def test_imagenet_classnames_keep_clips_duplicates():
    assert sorted(name for name, count in Counter(imagenet_classnames()).items() if count > 1) == ["missile", "sunglasses"]
    assert all(name == name.strip() and name for name in imagenet_classnames())


def test_template_sets():
    openai, simple = template_set("openai"), template_set("simple")
    assert (len(openai), len(set(openai)), len(simple)) == (80, 80, 7)
    assert openai[0] == "a bad photo of a {c}." and openai[39] == "a photo of a {c}." and openai[-1] == "a tattoo of the {c}."
    assert simple == ["itap of a {c}.", "a bad photo of the {c}.", "a origami {c}.", "a photo of the large {c}.",
                      "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}."]
    assert set(simple) <= set(openai) and all(t.count("{c}") == 1 for t in openai)
    with pytest.raises(EvalError, match="known: openai, simple"):
        template_set("clip")


def test_fill_leaves_other_braces_alone():
    assert fill("a {c} {not a slot}.", "goldfish") == "a goldfish {not a slot}."


def test_template_file_without_slot_is_an_error(tmp_path):
    (tmp_path / "templates.txt").write_text("a photo of a {c}.\n\na photo.\n")
    with pytest.raises(EvalError, match=r"template 2 in .*templates.txt \('a photo.'\) has no \{c\}"):
        read_templates(tmp_path / "templates.txt")
