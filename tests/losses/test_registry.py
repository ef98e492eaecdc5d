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
    with pytest.raises(TypeError, match="unexpected keyword argument 'objective'"):
        losses.build("clip", objective="sigmoid")  # clip is softmax; the sigmoid loss is siglip
    with pytest.raises(TypeError, match="unexpected keyword argument 'objective'"):
        losses.build("siglip", objective="softmax")
    assert losses.supplied("llip") == ("image_dim", "text_dim", "embed_dim") and losses.supplied("clip") == ()


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
    ("llip", {**LLIP_DIMS, "objective": "softmax", "exchange": "ring"},
     r"exchange 'ring' does not work with the softmax objective; valid exchanges for softmax: all_gather"),
    ("llip", {**LLIP_DIMS, "objective": "hinge"}, r"unknown objective 'hinge'; valid objectives: softmax, sigmoid"),
    ("llip", {**LLIP_DIMS, "objective": "softmax", "init_bias": -10.0},
     r"init_bias applies only to the sigmoid objective"),
    ("siglip", {"init_scale": 0.0}, r"init_scale must be in \(0, inf\]"),
    ("clip", {"init_scale": 101.0}, r"init_scale must be in \(0, 100\]"),
])
def test_bad_names_and_combinations_list_what_is_valid(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        losses.build(name, **kwargs)


def test_get_returns_the_registered_class_and_register_refuses_a_taken_name():
    assert losses.get("siglip") is type(losses.build("siglip"))
    with pytest.raises(ValueError, match="unknown loss 'sig'"):
        losses.get("sig")
    with pytest.raises(ValueError, match="'clip' is already registered"):
        losses.register("clip")(type("Other", (), {}))
