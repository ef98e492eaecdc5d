"""model.init_from and the towers' init_from start a new run from weights trained elsewhere (fresh optimizer, step and
data); model.{image,text}.frozen locks a tower: bit-identical after training, in eval mode, out of the optimizer."""
import shutil
from pathlib import Path

import pytest
import torch

from contrastive.checkpoint import load_checkpoint
from contrastive.config import ConfigError, load_config
from contrastive.model import build_model
from contrastive.train import train
from tests.contrastive.tiny_run import TINY_MODEL, tiny_config


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / f"step_{step:06d}.pt")["model"]


def tower(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A run trained 2 steps: the weights the others start from."""
    root = tmp_path_factory.mktemp("source")
    cfg = tiny_config(root, "train.steps=2")
    assert train(cfg).finished
    return Path(cfg.run_dir)


def test_a_run_starts_from_the_whole_model_with_a_fresh_step_counter(source, tmp_path):
    cfg = tiny_config(tmp_path, f"model.init_from={source}", "optim.lr=0", "train.steps=2", "optim.weight_decay=0")
    assert train(cfg).finished
    started = weights(Path(cfg.run_dir), 2)  # lr 0: what it started from
    assert same(started, weights(source, 2))
    assert load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "step_000002.pt")["step"] == 2


def test_one_tower_from_a_run_and_the_other_as_the_seed_makes_it(source, tmp_path):
    fresh_cfg = tiny_config(tmp_path / "fresh", "optim.lr=0", "train.steps=2")
    cfg = tiny_config(tmp_path / "lit", f"model.image.init_from={source}", "optim.lr=0", "train.steps=2")
    assert train(fresh_cfg).finished and train(cfg).finished
    started, fresh = weights(Path(cfg.run_dir), 2), weights(Path(fresh_cfg.run_dir), 2)
    assert same(tower(started, "image_tower."), tower(weights(source, 2), "image_tower."))
    assert same(tower(started, "text_tower."), tower(fresh, "text_tower."))


def test_a_frozen_image_tower_is_bit_identical_after_training_and_the_text_tower_learns(source, tmp_path):
    cfg = tiny_config(tmp_path, f"model.image.init_from={source}", "model.image.frozen=true", "train.steps=4")
    assert train(cfg).finished
    trained = weights(Path(cfg.run_dir), 4)
    assert same(tower(trained, "image_tower."), tower(weights(source, 2), "image_tower."))
    text_before = tower(weights(Path(cfg.run_dir), 2), "text_tower.")
    assert not same(tower(trained, "text_tower."), text_before)
    state = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "step_000004.pt")
    optimized = sum(len(group["params"]) for group in state["optimizer"]["param_groups"])
    assert optimized == len([k for k in trained if not k.startswith("image_tower.")])


def test_a_lit_run_resumed_from_its_checkpoint_reaches_the_uninterrupted_weights(source, tmp_path):
    """The frozen tower is stored in full: resume needs neither the source nor a rebuild of it."""
    lit = (f"model.image.init_from={source}", "model.image.frozen=true", "train.steps=4")
    straight = tiny_config(tmp_path, *lit, f"run_dir={tmp_path / 'straight'}")
    assert train(straight).finished
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    (tmp_path / "resumed/checkpoints/step_000004.pt").unlink()
    (tmp_path / "resumed/checkpoints/latest").write_text("step_000002.pt\n")
    resumed = tiny_config(tmp_path, *lit, f"run_dir={tmp_path / 'resumed'}")
    assert train(resumed, allow_config_change=True).finished  # the copied config.yaml names the other run_dir
    assert same(weights(tmp_path / "resumed", 4), weights(tmp_path / "straight", 4))


def test_a_frozen_tower_stays_in_eval_mode_and_gets_no_gradient():
    cfg = load_config(None, [*TINY_MODEL, "model.text.frozen=true"])
    model = build_model(cfg.model, cfg.loss, vocab_size=40, pad_id=0).train()
    assert model.image_tower.training and not model.text_tower.training
    images, tokens = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.randint(1, 40, (2, 12))
    out = model.loss(*model(images, tokens))
    out["loss"].backward()
    assert all(p.grad is None for p in model.text_tower.parameters())
    assert all(p.grad is not None for p in model.image_tower.parameters() if p.requires_grad)


def test_a_source_of_another_architecture_is_refused_naming_the_tensors_before_the_run_dir_exists(source, tmp_path):
    cfg = tiny_config(tmp_path, f"model.init_from={source}", "model.text.width=48")
    with pytest.raises(ConfigError, match=r"model.init_from=.* does not fit this run's architecture: shapes differ: "
                                          r"text_tower\.\S+ \[\d+.*\(this run: \[.*48"):
        train(cfg)
    assert not Path(cfg.run_dir).exists()


def test_the_whole_model_and_a_tower_from_two_sources_is_refused(source, tmp_path):
    cfg = tiny_config(tmp_path, f"model.init_from={source}", f"model.text.init_from={source}")
    with pytest.raises(ConfigError, match="model.init_from and model.text.init_from both say where weights come from"):
        train(cfg)


def test_a_run_fine_tunes_an_imported_model_with_the_imported_config_and_tokenizer(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from contrastive.commands import import_model
    from tests.contrastive.command_line import run_command
    from tests.contrastive.test_import import CLIP_BPE
    from tests.peers import TINY_CLIP, write_openclip_folder

    torch.manual_seed(0)
    src = write_openclip_folder(tmp_path / "openclip", open_clip.model.CLIP(**TINY_CLIP), TINY_CLIP)
    imported = tmp_path / "imported"
    run_command(import_model, "import", str(src), str(imported), "--tokenizer", str(CLIP_BPE))
    data = tiny_config(tmp_path / "data")  # its shards
    cfg = load_config(str(imported / "config.yaml"), [
        f"run_dir={tmp_path / 'tuned'}", f"model.init_from={imported}", f"data.tokenizer={imported / 'tokenizer.json'}",
        *[f"data.{key}={value}" for key, value in (("shards", data.data.shards[0]), ("workers", 0),
                                                   ("shuffle_buffer", 16))],
        "train.batch_size=8", "train.steps=2", "train.precision=fp32", "train.checkpoint_every=2", "optim.lr=0",
        "optim.weight_decay=0", "optim.warmup_steps=1"])
    assert train(cfg).finished
    assert same(weights(tmp_path / "tuned", 2), weights(imported, 0))


def test_position_embeddings_are_resampled_to_another_image_size_and_a_longer_context(source, tmp_path):
    """The source: 32 px (a 4 x 4 grid of 8 px patches) and 12 text positions; this run: 48 px (6 x 6) and 40."""
    cfg = tiny_config(tmp_path, f"model.init_from={source}", "model.image.image_size=48",
                      "model.text.context_length=40", "optim.lr=0", "train.steps=2")
    assert train(cfg).finished
    before, after = weights(source, 2), weights(Path(cfg.run_dir), 2)
    image_before, image_after = before["image_tower.trunk.pos_embed"], after["image_tower.trunk.pos_embed"]
    assert image_after.shape == (1, 1 + 36, 32) and torch.equal(image_after[:, 0], image_before[:, 0])  # class token
    text_before, text_after = before["text_tower.positional_embedding"], after["text_tower.positional_embedding"]
    assert text_after.shape == (40, 32) and torch.equal(text_after[0], text_before[0])
    torch.testing.assert_close(text_after[::10][:4], text_before[::3], atol=1e-6, rtol=0)  # stretched 12 -> 40


def test_long_clip_stretching_keeps_the_first_20_positions_and_interpolates_the_rest_by_4x():
    from contrastive.init_from import stretch_positions

    positions = torch.randn(77, 8)
    stretched = stretch_positions(positions, 248, "long_clip")  # Long-CLIP's 77 -> 248
    assert stretched.shape == (248, 8) and torch.equal(stretched[:20], positions[:20])
    torch.testing.assert_close(stretched[20::4], positions[20:], atol=1e-6, rtol=0)  # every 4th: the originals
    torch.testing.assert_close(stretched[21], (3 * positions[20] + positions[21]) / 4, atol=1e-6, rtol=0)
    torch.testing.assert_close(stretched[-1], positions[-1] + 3 * (positions[-1] - positions[-2]) / 4, atol=1e-5,
                               rtol=0)  # past the last original: its last step continued
    plain = stretch_positions(positions, 154, "interpolate")
    torch.testing.assert_close(plain[::2], positions, atol=1e-6, rtol=0)
    assert torch.equal(stretch_positions(positions, 50, "long_clip"), positions[:50])


def test_a_timm_checkpoint_file_initialises_the_image_trunk(tmp_path):
    from safetensors.torch import save_file

    from contrastive.image_tower import ImageTower

    cfg = tiny_config(tmp_path, "optim.lr=0", "train.steps=2")
    torch.manual_seed(5)
    trunk = ImageTower(cfg.model.image, cfg.model.embed_dim).trunk
    timm_state = {**trunk.state_dict(), "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    save_file(timm_state, tmp_path / "vit.safetensors")
    cfg = tiny_config(tmp_path, f"model.image.init_from={tmp_path / 'vit.safetensors'}", "optim.lr=0",
                      "train.steps=2", f"run_dir={tmp_path / 'from_timm'}")
    assert train(cfg).finished
    after = weights(tmp_path / "from_timm", 2)
    expected = {f"image_tower.trunk.{name}": value for name, value in trunk.state_dict().items()}
    assert same(tower(after, "image_tower.trunk."), expected)


def test_the_lit_preset_trains_a_text_tower_against_a_locked_timm_trunk(tmp_path):
    from safetensors.torch import save_file

    from contrastive.image_tower import ImageTower

    shrunk = ("model.embed_dim=32", "model.image.kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}")
    trunk_cfg = tiny_config(tmp_path, "model.image.init_from=unused", *shrunk, preset="lit_b16").model.image
    torch.manual_seed(5)
    trunk = ImageTower(trunk_cfg, embed_dim=32).trunk
    save_file({**trunk.state_dict(), "head.weight": torch.zeros(10, 32)}, tmp_path / "vit.safetensors")
    cfg = tiny_config(tmp_path, f"model.image.init_from={tmp_path / 'vit.safetensors'}", *shrunk, "train.steps=4",
                      preset="lit_b16")
    assert (cfg.model.image.frozen, cfg.model.image.projection, cfg.loss["init_scale"]) == (True, False, 10.0)
    assert train(cfg).finished
    trained = weights(Path(cfg.run_dir), 4)
    assert same(tower(trained, "image_tower."),
                {f"image_tower.trunk.{name}": value for name, value in trunk.state_dict().items()})
    assert not same(tower(trained, "text_tower."), tower(weights(Path(cfg.run_dir), 2), "text_tower."))


def test_a_resumed_run_still_has_its_data_checked_before_it_starts(source):
    """The init_from check is skipped on resume (the weights are the checkpoint's), the data paths are not."""
    from contrastive.preflight import preflight

    cfg = tiny_config(source.parent, "train.steps=4", "data.shards=/nonexistent/{0..1}.tar")
    with pytest.raises(ConfigError, match="data.shards"):
        preflight(cfg, world_size=1)
