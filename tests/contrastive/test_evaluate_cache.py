"""The evaluation cache of a run dir (contrastive/evaluate.py): its model key is a digest of the weights and the model
config, so what training's evaluation of step N kept is found again by `contrastive eval` of step N's checkpoint."""
import contextlib
import io
import json

import torch
from PIL import Image

from contrastive.cli import main
from contrastive.evaluate import cache_dir, weights_key
from contrastive.model import build_model
from contrastive.train import train
from tests.contrastive.tiny_run import COLOURS, tiny_config


def test_the_weights_key_follows_the_weights_and_the_model_config(tmp_path):
    cfg = tiny_config(tmp_path)
    model = build_model(cfg.model, cfg.loss, vocab_size=300, pad_id=0)
    copy = build_model(cfg.model, cfg.loss, vocab_size=300, pad_id=0)
    copy.load_state_dict(model.state_dict())
    assert weights_key(copy, cfg) == weights_key(model, cfg)
    with torch.no_grad():
        next(copy.parameters()).view(-1)[0] += 1e-6
    assert weights_key(copy, cfg) != weights_key(model, cfg)
    other_normalisation = tiny_config(tmp_path, "model.image.mean=[0.5,0.5,0.5]")
    assert weights_key(model, other_normalisation) != weights_key(model, cfg)


def test_contrastive_eval_finds_the_features_training_kept(tmp_path):
    probe = tmp_path / "probe"
    for split, count in (("train", 4), ("test", 2)):
        for name, rgb in COLOURS.items():
            (probe / split / name).mkdir(parents=True)
            for i in range(count):
                shade = tuple(max(0, c - 8 * i) for c in rgb)
                Image.new("RGB", (40, 40), shade).save(probe / split / name / f"{i}.png")
    cfg = tiny_config(tmp_path, "train.steps=2", f"eval.tasks.colours={{type: linear_probe, path: {probe}}}")
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg)
    run_dir = tmp_path / "run"
    kept = sorted((cache_dir(run_dir) / "linear_probe_features").iterdir())
    assert len(kept) == 2  # train and test features of step 2
    in_training = json.loads((run_dir / "eval" / "step_000002.json").read_text())["metrics"]
    (run_dir / "eval" / "step_000002.json").unlink()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["eval", str(run_dir)]) == 0
    assert sorted((cache_dir(run_dir) / "linear_probe_features").iterdir()) == kept  # same key: nothing new
    assert json.loads((run_dir / "eval" / "step_000002.json").read_text())["metrics"] == in_training
    assert in_training["linear_probe/colours/num_train"] == 16
