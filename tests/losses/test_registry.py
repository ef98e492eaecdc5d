import math

import pytest
import torch

import losses
from tests.losses.cases import LLIP_DIMS


def test_presets_are_registered_with_their_scorer_objective_exchange_and_initial_values():
    clip, siglip, llip = losses.build("clip"), losses.build("siglip"), losses.build("llip", **LLIP_DIMS)
    assert losses.names() == ["clip", "llip", "siglip"]
    assert (clip.scorer, clip.objective.name, clip.exchange) == ("dot", "softmax", "all_gather")
    assert (siglip.scorer, siglip.objective.name, siglip.exchange) == ("dot", "sigmoid", "ring")
    assert (llip.scorer, llip.objective.name, llip.exchange) == ("llip", "sigmoid", "ring")
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07)) and not hasattr(clip, "logit_bias")
    for loss in (siglip, llip):
        assert loss.logit_scale.item() == pytest.approx(math.log(10))
        assert loss.logit_bias.item() == -10.0
    assert (llip.similarity.num_heads, llip.similarity.tau, llip.similarity.text_chunk) == (2, 5.0, 128)


def test_cross_combinations_take_the_objectives_defaults():
    llip_softmax = losses.build("llip", **LLIP_DIMS, objective="softmax")
    assert (llip_softmax.scorer, llip_softmax.exchange) == ("llip", "all_gather")
    assert llip_softmax.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert not hasattr(llip_softmax, "logit_bias")
    clip_sigmoid = losses.build("clip", objective="sigmoid", exchange="all_gather", init_scale=3.0, init_bias=-2.0)
    assert (clip_sigmoid.logit_scale.item(), clip_sigmoid.logit_bias.item()) == (pytest.approx(math.log(3)), -2.0)
    # clip with the sigmoid objective is siglip: same parameters, same loss
    image, text = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    torch.testing.assert_close(losses.build("clip", objective="sigmoid")(image, text)["loss"],
                               losses.build("siglip")(image, text)["loss"])


@pytest.mark.parametrize("name, kwargs, message", [
    ("clipp", {}, r"unknown loss 'clipp'; did you mean 'clip'\?; known losses: clip, llip, siglip"),
    ("clip", {"tau": 5.0}, r"loss 'clip' does not take tau; valid arguments: objective='softmax', exchange=None, "
                           r"init_scale=None, init_bias=None"),
    ("llip", {"embed_dim": 8}, r"loss 'llip' needs image_dim, text_dim; valid arguments: image_dim, text_dim, "
                               r"embed_dim, num_heads=8"),
    ("clip", {"objective": "hinge"}, r"unknown objective 'hinge'; valid objectives: softmax, sigmoid"),
    ("clip", {"exchange": "ring"}, r"exchange 'ring' does not work with the softmax objective; "
                                   r"valid exchanges for softmax: all_gather"),
    ("siglip", {"exchange": "tree"}, r"exchange 'tree' does not work with the sigmoid objective; "
                                     r"valid exchanges for sigmoid: ring, all_gather"),
    ("clip", {"init_bias": -10.0}, r"init_bias applies only to the sigmoid objective"),
    ("siglip", {"init_scale": 0.0}, r"init_scale must be in \(0, 100\]"),
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
