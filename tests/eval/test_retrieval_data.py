import json

import pytest

from eval.errors import EvalError
from eval.retrieval import open_retrieval_set
from tests.eval.fixtures import BLUE, GREEN, RED, png_bytes, solid, write_karpathy, write_tar


def test_demo_layout_karpathy_dir(tmp_path):
    root = write_karpathy(tmp_path, [(solid(RED), ["a red one", " red "]), (solid(GREEN), ["green"] * 6)],
                          extra_entries=[{"filename": "never_written.png", "split": "train", "sentences": []}])
    data = open_retrieval_set(root, image_size=4)
    assert data.num_images == 2
    (image0, (order0, captions0)), (_, (order1, captions1)) = data.images[0], data.images[1]
    assert captions0 == ["a red one", "red"] and captions1 == ["green"] * 6
    assert (order0, order1) == ((0, 0), (0, 1)) and image0[:, 0, 0].tolist() == list(RED)


def test_coco_and_flickr_style_paths(tmp_path):
    (tmp_path / "val2014").mkdir()
    solid(RED).save(tmp_path / "val2014" / "COCO_1.jpg")
    solid(BLUE).save(tmp_path / "2.jpg")  # Flickr30k entries have no filepath
    entries = [{"filepath": "val2014", "filename": "COCO_1.jpg", "split": "test", "sentences": [{"raw": "a"}]},
               {"filename": "2.jpg", "split": "test", "sentences": [{"raw": "b"}]},
               {"filename": "3.jpg", "split": "val", "sentences": [{"raw": "c"}]}]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    data = open_retrieval_set(tmp_path / "dataset_coco.json", image_size=4)
    assert [path.relative_to(tmp_path).as_posix() for path, _ in data.images.items] == ["val2014/COCO_1.jpg", "2.jpg"]


def test_multiline_caption_shards(tmp_path):
    write_tar(tmp_path / "test" / "0.tar", [("a", {"webp": png_bytes(solid(RED)), "txt": b"one\n\ntwo\n"}),
                                            ("b", {"jpg": png_bytes(solid(GREEN)), "txt": b"three"})])
    (tmp_path / "dataset_type.txt").write_text("retrieval")
    data = open_retrieval_set(tmp_path, image_size=4)
    assert [payload for _, payload in data.images] == [((0, 0), ["one", "two"]), ((0, 1), ["three"])]


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", r"is not in Karpathy format: expected an object with an \"images\" list"),
    ('{"images": [{"split": "test", "filename": "x.png"}]}', r"images\[0\] is not in Karpathy format: expected a non-empty \"sentences\" list"),
    ('{"images": [{"split": "test", "filename": "x.png", "sentences": [{"tokens": []}]}]}', r"images\[0\].sentences\[0\] is not .*\"raw\""),
    ('{"images": [{"split": "train", "filename": "x.png", "sentences": [{"raw": "a"}]}]}', r"no images in split 'test' \(splits present: train: 1\)"),
    ('{"images": [{"split": "test", "filename": "gone.png", "sentences": [{"raw": "a"}]}]}', r"1 images of split 'test' not found, e.g. looked for .*gone.png"),
    ("{not json", "cannot read .*dataset.json as JSON"),
])
def test_bad_karpathy_json_is_named(tmp_path, content, message):
    (tmp_path / "images").mkdir()
    solid(RED).save(tmp_path / "images" / "x.png")
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(EvalError, match=message):
        open_retrieval_set(tmp_path, image_size=4)


def test_bad_retrieval_paths_are_named(tmp_path):
    with pytest.raises(EvalError, match="does not exist"):
        open_retrieval_set(tmp_path / "nowhere", image_size=4)
    with pytest.raises(EvalError, match="neither a Karpathy JSON"):
        open_retrieval_set(tmp_path, image_size=4)
    (tmp_path / "dataset_coco.json").write_text("{}")
    (tmp_path / "dataset_flickr30k.json").write_text("{}")
    with pytest.raises(EvalError, match="several Karpathy JSON files"):
        open_retrieval_set(tmp_path, image_size=4)


def test_shard_sample_without_captions_is_named(tmp_path):
    write_tar(tmp_path / "0.tar", [("k", {"png": png_bytes(solid(RED)), "txt": b"\n \n"})])
    with pytest.raises(EvalError, match=r"0.tar:k: .txt holds no caption"):
        list(open_retrieval_set(tmp_path, image_size=4).images)
