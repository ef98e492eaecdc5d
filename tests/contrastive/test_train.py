from pathlib import Path

import pytest
import torch

from contrastive import step as step_module, stopping
from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.config import ConfigError
from contrastive.evaluate import load_model, load_run
from contrastive.train import TrainingDiverged, train
from tests.contrastive.tiny_run import tiny_config
from tests.multiprocess import run_ranks


@pytest.fixture(autouse=True)
def clear_stop_flag():
    stopping.reset()
    yield
    stopping.reset()


def latest_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(Checkpointer(run_dir).latest())["model"]


def fail_on_call(monkeypatch, n: int, action):
    """Make the n-th call (1-based) of the training step run `action` first."""
    calls = {"n": 0}
    original = step_module.forward_backward

    def patched(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            action()
        return original(*args, **kwargs)

    monkeypatch.setattr(step_module, "forward_backward", patched)


def test_a_run_writes_its_config_tokenizer_checkpoints_and_tensorboard(tmp_path):
    result = train(tiny_config(tmp_path))
    run = tmp_path / "run"
    assert (result.step, result.finished) == (6, True)
    assert (run / "config.yaml").is_file() and (run / "tokenizer.json").is_file()
    assert Checkpointer(run).latest().name == "step_000006.pt"
    assert Checkpointer(run).steps() == [2, 4, 6]
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_crash_and_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    train(tiny_config(tmp_path, f"run_dir={tmp_path / 'straight'}", "train.steps=8", "train.checkpoint_every=3"))

    interrupted = tiny_config(tmp_path, f"run_dir={tmp_path / 'crashed'}", "train.steps=8", "train.checkpoint_every=3")

    def crash():
        raise KeyboardInterrupt("simulated kill after the step-3 checkpoint")

    fail_on_call(monkeypatch, 5, crash)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    assert Checkpointer(tmp_path / "crashed").latest().name == "step_000003.pt"
    monkeypatch.undo()
    result = train(interrupted)
    assert (result.step, result.finished) == (8, True)
    straight, resumed = latest_weights(tmp_path / "straight"), latest_weights(tmp_path / "crashed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_stop_request_checkpoints_the_current_step_and_resume_continues(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, "train.checkpoint_every=100")
    fail_on_call(monkeypatch, 3, stopping.request_stop)
    result = train(cfg)
    assert (result.step, result.finished, result.stopped_by_signal) == (3, False, True)
    assert Checkpointer(cfg.run_dir).latest().name == "step_000003.pt"
    monkeypatch.undo()
    stopping.reset()
    assert train(cfg).step == 6


def test_a_finished_run_is_not_rerun(tmp_path):
    cfg = tiny_config(tmp_path)
    train(cfg)
    before = latest_weights(tmp_path / "run")
    result = train(cfg)
    assert (result.step, result.finished) == (6, True)
    after = latest_weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_refuses_a_changed_config_unless_allowed(tmp_path):
    train(tiny_config(tmp_path))
    changed = tiny_config(tmp_path, "optim.lr=0.5", "train.steps=8")
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 \(saved\) -> 0.5"):
        train(changed)
    assert train(tiny_config(tmp_path, "train.steps=8")).step == 8  # a longer run is a resumable change
    assert train(tiny_config(tmp_path, "optim.lr=0.5", "train.steps=10"), allow_config_change=True).step == 10


def _nan_loss_from(monkeypatch, first_bad_call: int, last_bad_call: int):
    calls = {"n": 0}
    original = step_module.forward_backward

    def patched(model, *args, **kwargs):
        calls["n"] += 1
        out = original(model, *args, **kwargs)
        if first_bad_call <= calls["n"] <= last_bad_call:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        return out

    monkeypatch.setattr(step_module, "forward_backward", patched)


def test_non_finite_steps_skip_the_update_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tmp_path, "train.max_bad_steps=3")
    _nan_loss_from(monkeypatch, 3, 4)
    assert train(cfg).finished
    out = capsys.readouterr().out  # read at the log step after them: steps 3 and 4
    assert "step 4: 2 updates skipped since step 2 for a non-finite loss or gradient (2 in a row at most" in out
    assert out.count("skipped") == 1
    weights = latest_weights(tmp_path / "run")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_too_many_non_finite_steps_in_a_row_stop_with_the_last_checkpoint_intact(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, "train.max_bad_steps=2", "train.steps=10")
    _nan_loss_from(monkeypatch, 3, 100)
    with pytest.raises(TrainingDiverged, match="2 consecutive steps"):
        train(cfg)
    latest = Checkpointer(tmp_path / "run").latest()
    assert latest.name == "step_000002.pt"
    assert load_checkpoint(latest)["step"] == 2


def _stop_on_rank1(root: str) -> tuple[int, bool]:
    import torch.distributed as dist

    cfg = tiny_config(Path(root), "train.steps=8", "train.checkpoint_every=100")
    calls = {"n": 0}
    original = step_module.forward_backward

    def patched(*args, **kwargs):
        calls["n"] += 1
        if dist.get_rank() == 1 and calls["n"] == 3:
            stopping.request_stop()
        return original(*args, **kwargs)

    step_module.forward_backward = patched
    result = train(cfg)
    return result.step, result.stopped_by_signal


def test_a_stop_on_one_rank_stops_every_rank_at_the_same_step_and_one_rank_resumes_the_run(tmp_path, capsys):
    tiny_config(tmp_path)  # writes the shards and the tokenizer once, before the ranks start
    results = run_ranks(_stop_on_rank1, 2, str(tmp_path))
    assert results == [(4, True), (4, True)]  # the vote of step 3 is read at step 4, without making a step wait
    checkpoint = load_checkpoint(Checkpointer(tmp_path / "run").latest())
    assert checkpoint["step"] == 4 and checkpoint["world_size"] == 2 and len(checkpoint["data"]) == 2
    result = train(tiny_config(tmp_path, "train.steps=8", "train.checkpoint_every=100"))
    assert (result.step, result.finished) == (8, True)
    assert ("resuming 2 ranks x 0 workers as 1 rank x 0 workers: epoch 0 continues exactly-once, sample order "
            "differs\n") in capsys.readouterr().out
    assert load_checkpoint(Checkpointer(tmp_path / "run").latest())["world_size"] == 1


@pytest.mark.parametrize("tower", [[], ["model.image.timm_name=convnext_atto",
                                        "model.image.kwargs={depths: [1, 1, 2, 1], dims: [8, 16, 24, 32]}"]],
                         ids=["vit", "convnext"])
def test_any_timm_image_tower_trains_and_its_checkpoint_loads_for_eval(tmp_path, tower):
    cfg = tiny_config(tmp_path, "train.steps=2", *tower)
    assert train(cfg).finished
    run = load_run(Path(cfg.run_dir), [])
    model, step = load_model(run, Checkpointer(cfg.run_dir).latest(), torch.device("cpu"))
    assert step == 2 and type(model.image_tower.trunk).__name__ == ("ConvNeXt" if tower else "VisionTransformer")
