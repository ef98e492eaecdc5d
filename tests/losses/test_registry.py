import math

import pytest
import torch

import losses
from tests.losses.cases import LLIP_DIMS


def test_presets_are_registered_with_their_scorer_objective_exchange_and_initial_values():
    clip, siglip, llip = losses.build("clip"), losses.build("siglip"), losses.build("llip", **LLIP_DIMS)
    assert {"clip", "siglip", "llip"} <= set(losses.names())
    assert (clip.scorer, clip.objective.name, clip.exchange) == ("dot", "softmax", "all_gather")
    assert (siglip.scorer, siglip.objective.name, siglip.exchange) == ("dot", "sigmoid", "ring")
    assert (llip.scorer, llip.objective.name, llip.exchange) == ("llip", "sigmoid", "ring")
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07)) and not hasattr(clip, "logit_bias")
    for loss in (siglip, llip):
        assert loss.logit_scale.item() == pytest.approx(math.log(10))
        assert loss.logit_bias.item() == -10.0
    assert (llip.similarity.num_heads, llip.similarity.tau, llip.similarity.text_chunk) == (2, 5.0, 128)
    assert (clip.tower_outputs, llip.tower_outputs) == (("embedding", "embedding"), ("mixture_tokens", "pooled_state"))


def test_one_name_one_meaning_each_loss_takes_only_its_own_arguments():
    assert list(losses.arguments("clip")) == ["init_scale"]
    assert list(losses.arguments("siglip")) == ["exchange", "init_scale", "init_bias"]
    assert list(losses.arguments("llip")) == ["num_heads", "tau", "chunk_size", "qkv_norm", "objective", "exchange",
                                             "init_scale", "init_bias"]
    assert losses.supplied("llip") == ("image_dim", "text_dim", "embed_dim") and losses.supplied("clip") == ()
    assert losses.resolve("siglip", {"exchange": "all_gather"}) == {"exchange": "all_gather", "init_scale": 10.0,
                                                                     "init_bias": -10.0}


def test_llip_with_softmax_is_the_ablation_and_takes_the_objectives_defaults():
    llip_softmax = losses.build("llip", **LLIP_DIMS, objective="softmax")
    assert (llip_softmax.scorer, llip_softmax.exchange) == ("llip", "all_gather")
    assert llip_softmax.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert not hasattr(llip_softmax, "logit_bias")
    siglip = losses.build("siglip", exchange="all_gather", init_scale=3.0, init_bias=-2.0)
    assert (siglip.logit_scale.item(), siglip.logit_bias.item()) == (pytest.approx(math.log(3)), -2.0)
    image, text = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    torch.testing.assert_close(losses.build("siglip", exchange="all_gather")(image, text)["loss"],
                               losses.build("siglip")(image, text)["loss"])


@pytest.mark.parametrize("name, kwargs, message", [
    ("clipp", {}, r"unknown loss 'clipp'; did you mean 'clip'\?; known losses: .*clip.*siglip"),
    ("clip", {"tau": 5.0}, r"^loss 'clip' does not take tau; its arguments: init_scale=14.28"),
    ("clip", {"objective": "sigmoid"}, r"^loss 'clip' does not take objective; its arguments: init_scale="),
    ("llip", {"embed_dim": 8}, r"loss 'llip' takes the model-supplied widths image_dim, text_dim, embed_dim, got "
                               r"embed_dim"),
    ("llip", {**LLIP_DIMS, "objective": "hinge"}, r"loss 'llip': objective='hinge' is not 'sigmoid' or 'softmax'"),
    ("llip", {**LLIP_DIMS, "objective": "softmax", "exchange": "ring"},
     r"exchange 'ring' does not work with the softmax objective; valid exchanges for softmax: all_gather"),
    ("siglip", {"exchange": "tree"}, r"loss 'siglip': exchange='tree' is not 'ring' or 'all_gather'"),
    ("llip", {**LLIP_DIMS, "objective": "softmax", "init_bias": -10.0},
     r"init_bias applies only to the sigmoid objective"),
    ("siglip", {"init_scale": 0.0}, r"init_scale must be in \(0, 100\]"),
    ("llip", {**LLIP_DIMS, "chunk_size": "all"}, r"loss 'llip': chunk_size='all' is not an integer or null"),
    ("llip", {**LLIP_DIMS, "qkv_norm": 1}, r"loss 'llip': qkv_norm=1 is not true or false"),
])
def test_bad_names_arguments_and_combinations_list_what_is_valid(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        losses.build(name, **kwargs)


def test_model_supplied_widths_are_not_arguments():
    with pytest.raises(ValueError, match=r"loss 'llip': image_dim is supplied by the model; its arguments: "
                                         r"num_heads=8, tau=5.0, chunk_size=128"):
        losses.resolve("llip", {"image_dim": 4})


def test_get_returns_the_registered_class_and_register_refuses_a_taken_name():
    assert losses.get("siglip") is type(losses.build("siglip"))
    with pytest.raises(ValueError, match="unknown loss 'sig'"):
        losses.get("sig")
    with pytest.raises(ValueError, match="'clip' is already registered"):
        losses.register("clip")(type("Other", (), {}))
