import pytest
import torch

from contrastive.config import load_config, named_configs
from contrastive.model import build_model
from tests.contrastive.test_config import REQUIRED

VOCAB, PAD = 100, 0
TINY_TOWERS = ["model.embed_dim=16", "model.image.kwargs.embed_dim=32", "model.image.kwargs.depth=1",
               "model.image.kwargs.num_heads=2", "model.text.width=24", "model.text.depth=1", "model.text.heads=2"]
TINY_IMAGES = ["model.image.image_size=32", "model.image.kwargs.patch_size=8", "model.image.mixture_tokens=3",
               "model.text.context_length=8"]

# preset -> (scorer, patches per image, text context) at the preset's own geometry
PRESETS = {
    "clip_s16": ("dot", 196, 77),
    "clip_b32": ("dot", 49, 77),
    "clip_b16": ("dot", 196, 77),
    "clip_l14": ("dot", 256, 77),
    "siglip_b16": ("dot", 196, 64),
    "llip_b16": ("llip", 196, 77),
}


def tokens(n: int, length: int) -> torch.Tensor:
    """`<sot> words <eot> <pad>...` rows of different lengths."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.full((n, length), PAD)
    for i in range(n):
        words = 1 + i % (length - 2)
        rows[i, : words + 2] = torch.randint(1, VOCAB, (words + 2,), generator=gen)
    return rows


def images(n: int, size: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def tiny_model(loss: str, *overrides: str):
    torch.manual_seed(0)
    cfg = load_config(None, [f"loss.name={loss}", *TINY_TOWERS, *TINY_IMAGES, *overrides])
    return build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD)


# Parameters of OpenCLIP's model of the same name (its model profile table, millions): ours differ by the key
# biases our text attention leaves out (width x layers), and SigLIP by the image projection it does not have.
REFERENCE_PARAMETERS = {"clip_b16": (149.62, 49408), "clip_b32": (151.28, 49408), "clip_l14": (427.62, 49408),
                        "siglip_b16": (203.16, 32000)}


def test_every_named_config_builds_at_full_size_on_the_meta_device():
    for name in named_configs():
        cfg = load_config(name, REQUIRED.get(name, []))
        reference, vocab = REFERENCE_PARAMETERS.get(name, (None, 49408))
        with torch.device("meta"):
            model = build_model(cfg.model, cfg.loss, vocab_size=vocab, pad_id=PAD)
        if reference is not None:
            assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(reference, rel=3e-3), name


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_at_tiny_width_with_its_geometry(preset: str):
    scorer, patches, context = PRESETS[preset]
    cfg = load_config(preset, TINY_TOWERS)
    model = build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD)
    assert model.loss.scorer == scorer
    assert model.image_size == 224 and model.image_tower.trunk.patch_embed.num_patches == patches
    assert model.text_tower.context_length == context
    image_repr, text_repr = model(images(2, 224), tokens(2, context))
    if scorer == "dot":
        assert image_repr.shape == (2, 16) and text_repr.shape == (2, 16)
    else:
        assert image_repr.shape == (2, cfg.model.image.mixture_tokens, 32) and text_repr.shape == (2, 24)
    assert torch.isfinite(model.loss(image_repr, text_repr)["loss"])


@pytest.mark.parametrize("loss", ["clip", "siglip", "llip"])
def test_every_parameter_gets_a_gradient_from_one_loss_step(loss: str):
    pooling = [] if loss == "llip" else ["model.image.kwargs.global_pool=map"]  # mixture tokens pool nothing
    model = tiny_model(loss, *pooling, "model.image.kwargs.patch_drop_rate=0.25").train()
    out = model.loss(*model(images(4, 32), tokens(4, 8)))
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_dot_loss_gets_projected_towers_and_no_mixture_tokens():
    model = tiny_model("clip")
    assert model.image_tower.projection is not None and model.text_tower.projection is not None
    assert model.image_tower.trunk.num_prefix_tokens == 1  # the class token only
    image_repr, text_repr = model(images(3, 32), tokens(3, 8))
    torch.testing.assert_close(image_repr.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_repr.norm(dim=-1), torch.ones(3))


def test_llip_loss_gets_mixture_tokens_pooled_states_and_the_tower_widths():
    model = tiny_model("llip", "loss.num_heads=4")
    assert model.image_tower.projection is None and model.text_tower.projection is None
    assert model.image_tower.trunk.cls_token is None and model.image_tower.trunk.num_prefix_tokens == 3
    similarity = model.loss.similarity
    assert (similarity.image_dim, similarity.text_dim, similarity.text_projection.out_features) == (32, 24, 16)
    image_repr, text_repr = model(images(3, 32), tokens(3, 8))
    assert image_repr.shape == (3, 3, 32) and text_repr.shape == (3, 24)


@pytest.mark.parametrize("loss", ["clip", "llip"])
def test_evaluator_protocol_delegates_to_the_loss(loss: str):
    model = tiny_model(loss).eval()
    image_repr = model.encode_image(images(3, 32))
    text_repr = model.encode_text(tokens(5, 8))
    logits = model.logits(image_repr, text_repr)
    assert logits.shape == (3, 5)
    torch.testing.assert_close(logits, model.loss.logits(image_repr, text_repr))
    torch.testing.assert_close(model.combine_templates(text_repr), model.loss.combine_templates(text_repr))


def test_grad_checkpointing_switches_both_towers():
    model = tiny_model("clip")
    model.set_grad_checkpointing(True)
    assert model.text_tower.grad_checkpointing and model.image_tower.trunk.grad_checkpointing
    model.set_grad_checkpointing(False)
    assert not model.text_tower.grad_checkpointing and not model.image_tower.trunk.grad_checkpointing


def test_loss_arguments_from_the_config_reach_the_loss():
    model = tiny_model("siglip", "loss.init_scale=5.0", "loss.init_bias=-3.0")
    assert model.loss.logit_scale.exp().item() == pytest.approx(5.0)
    assert model.loss.logit_bias.item() == pytest.approx(-3.0)
