import pytest
import torch

from eval.errors import EvalError
from eval.zeroshot import open_classification_set
from eval.prompts import imagenet_classnames, template_set
from tests.eval.fixtures import BLUE, RED, png_bytes, solid, write_image_folder, write_tar


def test_image_folder_with_classnames_and_templates(tmp_path):
    root = write_image_folder(tmp_path / "set", {"b_cls": [solid(BLUE)], "a_cls": [solid(RED), solid(BLUE)]},
                              classnames=["first", "second"], templates=["a {c}.", "the {c}."])
    data = open_classification_set(root, image_size=4)
    assert data.classnames == ["first", "second"] and data.templates == ["a {c}.", "the {c}."]
    assert data.num_images == 3
    image, label = data.images[2]
    assert label == 1 and image.dtype == torch.uint8 and image.shape == (3, 4, 4)
    assert image[:, 0, 0].tolist() == list(BLUE)


def test_image_folder_without_names_uses_folder_names_and_the_chosen_template_set(tmp_path):
    root = write_image_folder(tmp_path, {"sea_lion": [solid(RED)], "tench": [solid(RED)]})
    data = open_classification_set(root, image_size=4, templates="simple")
    assert data.classnames == ["sea lion", "tench"] and data.templates == template_set("simple")


def test_thousand_wordnet_folders_get_clips_imagenet_names(tmp_path):
    for i in range(1000):
        (tmp_path / f"n{i:08d}").mkdir()
        (tmp_path / f"n{i:08d}" / "x.JPEG").write_bytes(b"")
    data = open_classification_set(tmp_path, image_size=4)
    assert data.classnames == imagenet_classnames() and len(data.templates) == 80


def test_clip_benchmark_shards(tmp_path):
    samples = [(f"s{i}", {"png": png_bytes(solid(RED)), "cls": str(i % 3).encode()}) for i in range(5)]
    write_tar(tmp_path / "test" / "0.tar", samples[:3])
    write_tar(tmp_path / "test" / "1.tar", samples[3:])
    (tmp_path / "test" / "nshards.txt").write_text("2\n")
    (tmp_path / "classnames.txt").write_text("x\ny\nz\n")
    (tmp_path / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    data = open_classification_set(tmp_path, image_size=4)
    assert data.classnames == ["x", "y", "z"] and data.templates == ["a photo of a {c}."]
    assert data.num_images is None
    assert [label for _, label in data.images] == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("empty_class", r"class folder .*b_cls has no images"),
    ("name_count", r"classnames.txt has 3 class names but .* has 2 class folders"),
    ("few_wordnet_ids", r"has 2 WordNet-id folders, not ImageNet's 1000"),
    ("no_classnames_beside_shards", "has shards but no classnames.txt"),
    ("retrieval_shards", "says 'retrieval'"),
    ("nshards_mismatch", r"says 2 shards but 1 missing, e.g. .*1.tar"),
])
def test_bad_layouts_are_named(tmp_path, layout, message):
    root = tmp_path / "set"
    if layout == "empty_class":
        write_image_folder(root, {"a_cls": [solid(RED)]})
        (root / "b_cls").mkdir()
        (root / "b_cls" / "notes.txt").write_text("not an image")
    elif layout == "name_count":
        write_image_folder(root, {"a": [solid(RED)], "b": [solid(RED)]}, classnames=["x", "y", "z"])
    elif layout == "few_wordnet_ids":
        write_image_folder(root, {"n01440764": [solid(RED)], "n01443537": [solid(RED)]})
    elif layout in ("no_classnames_beside_shards", "retrieval_shards", "nshards_mismatch"):
        write_tar(root / "test" / "0.tar", [("k", {"png": png_bytes(solid(RED)), "cls": b"0"})])
        if layout == "retrieval_shards":
            (root / "dataset_type.txt").write_text("retrieval\n")
        if layout == "nshards_mismatch":
            (root / "test" / "nshards.txt").write_text("2")
    with pytest.raises(EvalError, match=message):
        open_classification_set(root, image_size=4)


@pytest.mark.parametrize("fields, message", [
    ({"png": b"", "cls": b"7"}, r"0.tar:k: .cls is '7'; expected a label in 0..1"),
    ({"cls": b"0", "json": b"{}"}, r"0.tar:k has no image \(expected one of .webp, .png, .jpg, .jpeg; found .cls, .json\)"),
    ({"png": b"not a png", "cls": b"1"}, r"cannot decode image .*0.tar:k"),
])
def test_bad_samples_are_named(tmp_path, fields, message):
    write_tar(tmp_path / "0.tar", [("k", fields)])
    (tmp_path / "classnames.txt").write_text("x\ny\n")
    data = open_classification_set(tmp_path, image_size=4)
    with pytest.raises(EvalError, match=message):
        list(data.images)
