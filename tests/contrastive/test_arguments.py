"""Constructor parameters as config arguments (contrastive/arguments.py), on the registered losses."""
import pytest

import losses
from contrastive.arguments import arguments, describe, resolve


def test_each_loss_has_its_own_arguments_and_the_model_supplied_widths_are_not_among_them():
    assert list(arguments(losses.get("clip"))) == ["init_scale"]
    assert list(arguments(losses.get("siglip"))) == ["exchange", "init_scale", "init_bias"]
    assert list(arguments(losses.get("llip"), losses.MODEL_SUPPLIED)) == [
        "num_heads", "tau", "chunk_size", "qkv_norm", "objective", "exchange", "init_scale", "init_bias"]
    assert describe(losses.get("siglip")) == "exchange='ring', init_scale=10.0, init_bias=-10.0"


def test_resolve_fills_the_defaults_under_what_is_given():
    assert resolve(losses.get("siglip"), {"exchange": "all_gather"}, "loss 'siglip'") == {
        "exchange": "all_gather", "init_scale": 10.0, "init_bias": -10.0}


@pytest.mark.parametrize("name, given, message", [
    ("clip", {"tau": 5.0}, r"^loss 'clip' does not take tau; its arguments: init_scale=14.28"),
    ("llip", {"taus": 5.0}, r"^loss 'llip' does not take taus \(did you mean tau\?\); its arguments: num_heads=8"),
    ("llip", {"image_dim": 4}, r"^loss 'llip': image_dim is supplied by the model; its arguments: num_heads=8, "
                               r"tau=5.0, chunk_size=128"),
    ("siglip", {"exchange": "tree"}, r"^loss 'siglip': exchange='tree' is not 'ring' or 'all_gather'$"),
    ("llip", {"objective": "hinge"}, r"^loss 'llip': objective='hinge' is not 'sigmoid' or 'softmax'$"),
    ("llip", {"chunk_size": "all"}, r"^loss 'llip': chunk_size='all' is not an integer or null$"),
    ("llip", {"qkv_norm": 1}, r"^loss 'llip': qkv_norm=1 is not true or false$"),
    ("llip", {"tau": True}, r"^loss 'llip': tau=True is not a number$"),
])
def test_a_bad_argument_names_the_class_the_argument_and_what_it_takes(name, given, message):
    with pytest.raises(ValueError, match=message):
        resolve(losses.get(name), given, f"loss {name!r}", supplied=losses.MODEL_SUPPLIED)


def test_a_parameter_without_a_default_must_be_given():
    class Needs:
        def __init__(self, path: str, split: str = "test"):
            pass

    with pytest.raises(ValueError, match=r"^task 'x' needs path; its arguments: path, split='test'$"):
        resolve(Needs, {}, "task 'x'")
    assert resolve(Needs, {"path": "/d"}, "task 'x'") == {"path": "/d", "split": "test"}
