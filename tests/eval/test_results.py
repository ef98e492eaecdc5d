import json
import os

import pytest

from eval.errors import EvalError
from eval.results import headline, metric_lines, read_json, write_json


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "eval" / "step_000500.json"
    write_json(path, {"retrieval/coco/t2i_R@1": 0.5, "zeroshot/imagenet/top1": 0.25}, step=500)
    assert json.loads(path.read_text()) == {"step": 500, "metrics": {"retrieval/coco/t2i_R@1": 0.5,
                                                                     "zeroshot/imagenet/top1": 0.25}}
    assert read_json(path) == (500, {"retrieval/coco/t2i_R@1": 0.5, "zeroshot/imagenet/top1": 0.25})
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "step_000001.json"
    write_json(path, {"zeroshot/x/top1": 0.1}, step=1)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"zeroshot/x/top1": 0.9}, step=1)
    assert read_json(path) == (1, {"zeroshot/x/top1": 0.1})
    assert [p.name for p in tmp_path.iterdir()] == ["step_000001.json"]


def test_non_finite_metrics_are_refused(tmp_path):
    with pytest.raises(EvalError, match="non-finite metrics .*: zeroshot/x/top1"):
        write_json(tmp_path / "r.json", {"zeroshot/x/top1": float("nan"), "zeroshot/x/top5": 1.0})
    assert not (tmp_path / "r.json").exists()


def test_reading_something_else_is_an_error(tmp_path):
    (tmp_path / "r.json").write_text('{"top1": 1}')
    with pytest.raises(EvalError, match="is not an evaluation result"):
        read_json(tmp_path / "r.json")


def test_counts_print_as_integers_scores_with_four_decimals_and_the_headline_is_top1_and_r_at_1():
    metrics = {"zeroshot/in1k/top5": 0.9, "zeroshot/in1k/top1": 0.71, "zeroshot/in1k/num_images": 50000.0,
               "retrieval/coco/t2i_R@5": 0.6, "retrieval/coco/t2i_R@1": 0.3, "retrieval/coco/i2t_R@1": 0.45}
    assert headline(metrics) == {"retrieval/coco/i2t_R@1": 0.45, "retrieval/coco/t2i_R@1": 0.3,
                                 "zeroshot/in1k/top1": 0.71}
    assert metric_lines({"zeroshot/in1k/num_images": 50000.0, "zeroshot/in1k/top1": 0.71}) == [
        "  zeroshot/in1k/num_images  50000", "  zeroshot/in1k/top1        0.7100"]
