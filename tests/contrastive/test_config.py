import pytest

from contrastive.config import (Config, ConfigError, diff, from_yaml_text, load_config, named_configs, to_flat_dict,
                                to_yaml)


def test_defaults_then_named_config_then_overrides():
    cfg = load_config("demo", ["optim.lr=1e-3", "train.precision=fp32", "eval.zeroshot.shapes=/tmp/x"])
    assert cfg.optim.lr == 1e-3
    assert cfg.train.precision == "fp32"
    assert cfg.eval.zeroshot["shapes"] == "/tmp/x"  # a mapping override adds to the named config's entries
    assert cfg.run_dir == "runs/demo"
    assert isinstance(cfg, Config)


def test_a_bare_string_for_a_list_field_is_a_one_element_list():
    cfg = load_config(None, ["data.shards=/d/{000..009}.tar"])
    assert cfg.data.shards == ["/d/{000..009}.tar"]
    cfg = load_config(None, ["data.shards=[/a/x.tar,/b/y.tar]", "data.weights=[0.7,0.3]"])
    assert cfg.data.shards == ["/a/x.tar", "/b/y.tar"] and cfg.data.weights == [0.7, 0.3]


@pytest.mark.parametrize("override, expected", [
    ("optim.lrr=1", "optim.lrr is not a key of optim (OptimConfig); did you mean optim.lr?"),
    ("modl.width=3", "did you mean model?"),
    ("optim.lr.x=1", "optim.lr is a value, not a section"),
])
def test_unknown_key_names_it_and_suggests(override, expected):
    with pytest.raises(ConfigError, match="valid keys|not a section") as e:
        load_config("demo", [override])
    assert expected in str(e.value)


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["train.stepz=3"])
    assert "valid keys: steps, batch_size, seed" in str(e.value)


@pytest.mark.parametrize("override", ["optim.lr=abc", "train.steps=1.5", "train.compile=maybe"])
def test_wrong_type_names_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"config error: {key}: .*(could not be converted|is not a valid bool)"):
        load_config("demo", [override])


def test_bad_choice_lists_valid_choices_with_did_you_mean():
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["model.image.global_pool=tokn"])
    assert "did you mean token?" in str(e.value)
    assert "valid: token, avg, map" in str(e.value)


def test_unknown_loss_lists_the_registry():
    with pytest.raises(ConfigError, match="loss.name='cilp' is not a registered loss; did you mean clip"):
        load_config("demo", ["loss.name=cilp"])


def test_override_without_equals_and_unknown_named_config():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config("demo", ["optim.lr"])
    with pytest.raises(ConfigError, match="unknown config 'dmeo'; did you mean demo"):
        load_config("dmeo")


def test_bad_key_inside_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  weight_decayy: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert "did you mean optim.weight_decay?" in str(e.value) and f"(in config {path})" in str(e.value)


def test_base_inheritance_and_cycles(tmp_path):
    parent = tmp_path / "parent.yaml"
    child = tmp_path / "child.yaml"
    parent.write_text("optim:\n  lr: 0.01\ntrain:\n  steps: 7\n")
    child.write_text(f"base: {parent}\noptim:\n  lr: 0.02\n")
    cfg = load_config(str(child))
    assert (cfg.optim.lr, cfg.train.steps) == (0.02, 7)
    parent.write_text(f"base: {child}\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(str(child))


def test_every_named_config_loads():
    assert "demo" in named_configs()
    for name in named_configs():
        load_config(name)


def test_saved_yaml_round_trips_and_diff_names_changed_keys():
    cfg = load_config("demo", ["optim.lr=0.123"])
    again = from_yaml_text(to_yaml(cfg))
    assert again == cfg
    other = load_config("demo", ["optim.lr=0.5", "train.seed=3"])
    assert diff(cfg, other) == {"optim.lr": (0.123, 0.5), "train.seed": (0, 3)}
    assert to_flat_dict(cfg)["optim.lr"] == 0.123


def test_an_override_replaces_a_mapping_and_a_dotted_one_adds_to_it():
    cfg = load_config("demo", ["eval.zeroshot={}", "eval.retrieval.extra=/data/x"])
    assert cfg.eval.zeroshot == {}
    assert cfg.eval.retrieval["extra"] == "/data/x" and "attributes" in cfg.eval.retrieval


def test_a_value_that_is_not_yaml_is_taken_as_typed():
    assert load_config(None, ["run_dir=runs/[x"]).run_dir == "runs/[x"
    with pytest.raises(ConfigError, match=r"config error: optim.lr: .*'\['"):
        load_config(None, ["optim.lr=["])


@pytest.mark.parametrize("override, message", [
    ("data.crop_scale=[1.0,0.5]", "low <= high"),
    ("run_dir=", "run_dir is empty"),
])
def test_values_that_would_fail_later_are_refused_up_front(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])
