"""Run dirs written before each loss owned its arguments and the image tower took any timm model
(tests/fixtures/legacy_runs, written by commit e4ec660): they resume, in today's keys, to the weights that
commit itself reached, and they evaluate."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.cli import main
from contrastive.config import from_yaml_text

FIXTURE = Path(__file__).parents[1] / "fixtures" / "legacy_runs"
# Sum of |w| over every model entry at step 4, as e4ec660 resumed these runs (`train RUN train.steps=4`).
E4EC660_STEP_4 = {"clip": 2274.9902577278935, "llip": 2359.7878574378724}


@pytest.fixture
def legacy(tmp_path, monkeypatch) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "runs")
    monkeypatch.chdir(tmp_path / "runs")  # the runs' configs name their data by relative paths
    return tmp_path / "runs"


@pytest.mark.parametrize("run", ["clip", "llip"])
def test_a_legacy_run_evaluates_as_its_own_commit_did_then_resumes_to_the_weights_that_commit_reached(
        legacy, run, capsys):
    written = json.loads((legacy / run / "eval" / "step_000002.json").read_text())
    (legacy / run / "eval" / "step_000002.json").unlink()
    assert main(["eval", run]) == 0
    assert json.loads((legacy / run / "eval" / "step_000002.json").read_text())["metrics"] == written["metrics"]
    capsys.readouterr()
    assert main(["train", run, "train.steps=4"]) == 0
    out = capsys.readouterr().out
    assert f"resuming {run} from step_000002.pt (step 2)" in out and "training finished at step 4" in out
    state = load_checkpoint(Checkpointer(legacy / run).latest())
    total = sum(v.double().abs().sum().item() for v in state["model"].values())
    assert total == pytest.approx(E4EC660_STEP_4[run], rel=1e-9)
    assert any(name.startswith("image_tower.trunk.") for name in state["model"])
    saved = from_yaml_text((legacy / run / "config.yaml").read_text())  # rewritten in today's keys
    assert saved.model.image.kwargs["embed_dim"] == 32 and saved.loss["name"] == run
    assert "width:" not in (legacy / run / "config.yaml").read_text().split("text:")[0]


def test_a_legacy_checkpoint_loads_with_the_image_tower_renamed(legacy):
    state = load_checkpoint(legacy / "llip" / "checkpoints" / "step_000002.pt")
    raw = torch.load(legacy / "llip" / "checkpoints" / "step_000002.pt", weights_only=True)
    assert {k.replace("image_tower.vit.", "image_tower.trunk.") for k in raw["model"]} == set(state["model"])
