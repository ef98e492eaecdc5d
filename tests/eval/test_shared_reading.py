"""Evaluation reads shards with training's reader and decodes with its decoder: a sample reads alike in both."""
import io
import tarfile

import pytest
import torch

from data.decode import ImageTransform, decode
from data.shards import read_shard
from eval.errors import EvalError
from eval.zeroshot import open_classification_set
from tests.eval.fixtures import BLUE, GREEN, RED, RGB, png_bytes, solid, write_tar


def _encoded(rgb: RGB, image_format: str) -> bytes:
    buffer = io.BytesIO()
    solid(rgb).save(buffer, image_format, lossless=True)  # lossless: read for WEBP, ignored by JPEG
    return buffer.getvalue()


def test_a_sample_with_several_images_shows_the_same_one_to_training_and_evaluation(tmp_path):
    members = {"jpg": _encoded(RED, "JPEG"), "png": png_bytes(solid(GREEN)), "webp": _encoded(BLUE, "WEBP"),
               "txt": b"a caption", "cls": b"0"}
    shard = write_tar(tmp_path / "test" / "0.tar", [("k", members)])
    (tmp_path / "classnames.txt").write_text("only\n")
    (raw,) = read_shard(shard)
    trained, _ = decode(raw.members, ImageTransform(8, train=False, crop_scale=(1.0, 1.0)), torch.Generator())
    [(evaluated, label)] = list(open_classification_set(tmp_path, image_size=8).images)
    assert torch.equal(trained, evaluated) and trained[:, 4, 4].tolist() == list(BLUE) and label == 0


def test_an_eval_shard_cut_at_a_member_boundary_is_an_error_naming_it(tmp_path):
    shard = write_tar(tmp_path / "test" / "0.tar", [(f"k{i}", {"png": png_bytes(solid(RED)), "cls": b"0"})
                                                    for i in range(3)])
    with tarfile.open(shard) as tar:
        cut = tar.getmember("k2.png").offset
    shard.write_bytes(shard.read_bytes()[:cut])  # reads like a complete tar of two samples, bar the end marker
    (tmp_path / "classnames.txt").write_text("only\n")
    with pytest.raises(EvalError, match=r"shard .*0\.tar is truncated or unreadable"):
        list(open_classification_set(tmp_path, image_size=8).images)
