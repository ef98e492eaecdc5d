import pytest
import torch

from contrastive.config import OptimConfig
from contrastive.optim import build_optimizer, param_groups
from tests.contrastive.test_model import tiny_model


def group_names(model: torch.nn.Module, weight_decay: float) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, weight_decay)
    assert decay["weight_decay"] == weight_decay and no_decay["weight_decay"] == 0.0
    return {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]}


@pytest.mark.parametrize("loss", ["siglip", "llip"])
def test_every_parameter_lands_in_exactly_one_group(loss: str):
    model = tiny_model(loss)
    decay, no_decay = group_names(model, 0.2)
    assert not decay & no_decay
    assert decay | no_decay == {n for n, _ in model.named_parameters()}


def test_openclip_split_decays_only_matrices_that_are_not_positions_or_tokens():
    decay, no_decay = group_names(tiny_model("siglip"), 0.2)
    assert {"loss.logit_scale", "loss.logit_bias", "image_tower.trunk.pos_embed", "image_tower.trunk.cls_token",
            "text_tower.positional_embedding", "text_tower.final_norm.weight", "text_tower.blocks.0.q_bias",
            "image_tower.trunk.blocks.0.norm1.weight", "image_tower.trunk.patch_embed.proj.bias"} <= no_decay
    assert {"text_tower.token_embedding.weight", "text_tower.blocks.0.qkv.weight", "text_tower.projection.weight",
            "image_tower.projection.weight", "image_tower.trunk.patch_embed.proj.weight",
            "image_tower.trunk.blocks.0.mlp.fc1.weight"} <= decay
    assert all(".bias" not in n and "norm" not in n for n in decay)


def test_llip_mixture_tokens_and_scorer_projections():
    decay, no_decay = group_names(tiny_model("llip"), 0.2)
    assert "image_tower.trunk.reg_token" in no_decay
    assert {"loss.similarity.query.weight", "loss.similarity.out.weight",
            "loss.similarity.text_projection.weight"} <= decay
    assert "loss.similarity.query.bias" in no_decay


def test_frozen_parameters_are_left_out():
    model = tiny_model("clip")
    model.text_tower.token_embedding.weight.requires_grad_(False)
    decay, no_decay = group_names(model, 0.2)
    assert "text_tower.token_embedding.weight" not in decay | no_decay


def test_build_optimizer_takes_the_config():
    optimizer = build_optimizer(tiny_model("clip"), OptimConfig(lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert all(g["lr"] == 3e-4 and g["betas"] == (0.9, 0.95) and g["eps"] == 1e-8 for g in optimizer.param_groups)


@pytest.mark.parametrize("scaling, decayed", [("lr", 1 - 5e-4 * 1e-4), ("schedule", 1 - 0.5 * 1e-4)])
def test_weight_decay_scales_with_the_lr_or_with_the_schedules_factor_only(scaling, decayed):
    """With zero gradients an AdamW step is the decay alone: w <- w (1 - lr_t x wd) in torch's convention, and
    w <- w (1 - s_t x wd) in big_vision's, s_t = lr_t / lr; here lr = 1e-3 and lr_t = 5e-4 (s_t = 0.5)."""
    model = tiny_model("clip")
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=1e-4, weight_decay_scaling=scaling))
    weight = model.image_tower.projection.weight
    before = weight.detach().clone()
    for group in optimizer.param_groups:
        group["lr"] = 5e-4
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), before * decayed, rtol=1e-7, atol=0)
