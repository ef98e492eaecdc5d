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


def test_a_list_of_brace_patterns_is_a_list_although_yaml_reads_braces_as_mappings():
    cfg = load_config(None, ["data.shards=[/a/{000..009}.tar,/b/{00..99}.tar]", "data.weights=[0.7,0.3]"])
    assert cfg.data.shards == ["/a/{000..009}.tar", "/b/{00..99}.tar"]  # docs/training.md's example
    assert load_config(None, ["data.shards=[/a/{0,1}.tar, /b/x.tar]"]).data.shards == ["/a/{0,1}.tar", "/b/x.tar"]


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


@pytest.mark.parametrize("override", ["optim.lr=abc", "train.steps=1.5", "train.grad_checkpointing=maybe"])
def test_wrong_type_names_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"config error: {key}: .*(could not be converted|is not a valid bool)"):
        load_config("demo", [override])


def test_bad_choice_lists_valid_choices_with_did_you_mean():
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["model.text.pool=eott"])
    assert "did you mean eot?" in str(e.value)
    assert "valid: eot, argmax, last, mean" in str(e.value)


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


# what a named config leaves '???' (required), given
REQUIRED = {"lit_b16": ["model.image.init_from=vit_base_patch16_224.safetensors"]}


def test_every_named_config_loads():
    assert "demo" in named_configs()
    for name in named_configs():
        load_config(name, REQUIRED.get(name, []))


def test_a_key_a_config_leaves_required_is_an_error_at_load_time_until_it_is_set(tmp_path):
    with pytest.raises(ConfigError, match=r"model.image.init_from must be set: the config leaves it '\?\?\?'"):
        load_config("lit_b16")
    assert load_config("lit_b16", REQUIRED["lit_b16"]).model.image.init_from == "vit_base_patch16_224.safetensors"
    child = tmp_path / "child.yaml"  # a config built on it may set it, or leave it required
    child.write_text("base: lit_b16\nmodel: {image: {init_from: runs/pretrained}}\n")
    assert load_config(str(child)).model.image.init_from == "runs/pretrained"
    child.write_text("base: clip_b16\noptim:\n  lr: ???\n")
    with pytest.raises(ConfigError, match="optim.lr must be set"):
        load_config(str(child))
    assert load_config(str(child), ["optim.lr=0.1"]).optim.lr == 0.1


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


def test_the_loss_section_is_its_name_and_that_losss_own_arguments_all_resolved():
    cfg = load_config("demo", ["loss.name=llip", "loss.tau=2", "loss.num_heads=4"])
    assert cfg.loss == {"name": "llip", "num_heads": 4, "tau": 2, "chunk_size": 128, "qkv_norm": False,
                        "objective": "sigmoid", "exchange": None, "init_scale": None, "init_bias": None}
    assert load_config("demo").loss == {"name": "clip", "init_scale": pytest.approx(1 / 0.07)}
    assert from_yaml_text(to_yaml(cfg)) == cfg


@pytest.mark.parametrize("overrides, message", [
    (["loss.tau=5"], r"^config error: loss: loss 'clip' does not take tau; its arguments: init_scale=14.2857"),
    (["loss.name=clip", "loss.objective=sigmoid"], r"loss 'clip' does not take objective"),
    (["loss.name=llip", "loss.embed_dim=8"], r"loss 'llip': embed_dim is supplied by the model; its arguments: "
                                             r"num_heads=8, tau=5.0, chunk_size=128, qkv_norm=False"),
    (["loss.name=siglip", "loss.exchange=tree"], r"loss 'siglip': exchange='tree' is not 'ring' or 'all_gather'"),
    (["loss.name=llip", "loss.num_heads=many"], r"loss 'llip': num_heads='many' is not an integer"),
    (["loss={tau: 5}"], r"loss.name=None is not a registered loss"),
])
def test_a_loss_argument_is_checked_against_the_registered_class_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def test_naming_another_loss_starts_its_arguments_afresh_and_the_same_loss_keeps_them(tmp_path):
    assert load_config("llip_b16", ["loss.name=clip"]).loss["name"] == "clip"  # not "clip does not take tau"
    assert load_config("llip_b16", ["loss.tau=2"]).loss["num_heads"] == 8
    assert load_config("llip_b16", ["loss.exchange=all_gather", "loss.name=siglip"]).loss["exchange"] == "all_gather"
    child = tmp_path / "child.yaml"
    child.write_text("base: llip_b16\nloss:\n  name: siglip\n  init_bias: -5.0\n")
    assert load_config(str(child)).loss == {"name": "siglip", "exchange": "ring", "init_scale": 10.0, "init_bias": -5.0}
    child.write_text("base: llip_b16\nloss:\n  name: llip\n  qkv_norm: true\n")
    loss = load_config(str(child)).loss
    assert (loss["num_heads"], loss["tau"], loss["qkv_norm"]) == (8, 5.0, True)


def test_the_image_tower_is_a_timm_name_plus_its_kwargs_and_old_shape_keys_point_there():
    cfg = load_config("clip_s16", ["model.image.kwargs.drop_path_rate=0.1"])
    assert cfg.model.image.kwargs == {"embed_dim": 384, "num_heads": 6, "drop_path_rate": 0.1}
    with pytest.raises(ConfigError, match=r"model.image.width is not a key of model.image \(ImageTowerConfig\); "
                                          r"the tower's shape is timm's: model.image.kwargs.embed_dim"):
        load_config("demo", ["model.image.width=64"])


LEGACY_SAVED = """
model:
  image: {timm_name: vit_base_patch16_224, image_size: 32, patch_size: 8, width: 32, depth: 1, heads: 2,
          mlp_ratio: 4.0, global_pool: token, mixture_tokens: 2, patch_drop_rate: 0.0}
loss: {name: NAME, objective: OBJECTIVE, exchange: EXCHANGE, init_scale: null, init_bias: null, num_heads: null,
       tau: null, chunk_size: null, qkv_norm: null}
"""


@pytest.mark.parametrize("name, objective, exchange, loss", [
    ("clip", "null", "null", {"name": "clip", "init_scale": pytest.approx(1 / 0.07)}),
    ("clip", "sigmoid", "all_gather", {"name": "siglip", "exchange": "all_gather", "init_scale": 10.0,
                                       "init_bias": -10.0}),
    ("siglip", "null", "null", {"name": "siglip", "exchange": "ring", "init_scale": 10.0, "init_bias": -10.0}),
    ("llip", "softmax", "null", {"name": "llip", "num_heads": 8, "tau": 5.0, "chunk_size": 128, "qkv_norm": False,
                                 "objective": "softmax", "exchange": None, "init_scale": None, "init_bias": None}),
])
def test_a_config_saved_with_the_old_keys_reads_as_the_same_model_and_loss(name, objective, exchange, loss):
    cfg = from_yaml_text(LEGACY_SAVED.replace("NAME", name).replace("OBJECTIVE", objective)
                         .replace("EXCHANGE", exchange))
    assert cfg.loss == loss
    shape = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 4.0, "patch_drop_rate": 0.0}
    assert cfg.model.image.kwargs == (shape if name == "llip" else {**shape, "global_pool": "token"})
    assert (cfg.model.image.image_size, cfg.model.image.mixture_tokens) == (32, 2)


def test_weight_decay_scaling_by_the_schedule_needs_a_learning_rate():
    assert load_config("siglip_b16").optim.weight_decay_scaling == "schedule"
    with pytest.raises(ConfigError, match="weight_decay_scaling=schedule divides the decay by optim.lr, which is 0"):
        load_config("siglip_b16", ["optim.lr=0"])


def test_a_plugin_that_cannot_be_imported_is_named():
    with pytest.raises(ConfigError, match=r"^config error: plugins: cannot import 'no_such_plugin' \(No module named "
                                          r"'no_such_plugin'\)"):
        load_config("demo", ["plugins=[no_such_plugin]"])


def test_an_evaluation_task_is_a_registered_type_and_its_own_arguments_all_resolved():
    cfg = load_config("demo", ["eval.tasks={}", "eval.tasks.inet={type: zeroshot, path: /data/inet, templates: simple}",
                               "eval.tasks.coco.type=retrieval", "eval.tasks.coco.path=/data/coco"])
    assert cfg.eval.tasks == {
        "inet": {"type": "zeroshot", "path": "/data/inet", "templates": "simple", "split": "test"},
        "coco": {"type": "retrieval", "path": "/data/coco", "split": "test"}}
    assert from_yaml_text(to_yaml(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("eval.tasks.x={type: zeroshoot, path: /d}", r"^config error: eval.tasks.x.type: unknown task type 'zeroshoot'; "
                                                 r"did you mean 'zeroshot'\?; known types: .*retrieval.*zeroshot"),
    ("eval.tasks.x={type: zeroshot}", r"^config error: eval.tasks.x: task type 'zeroshot' needs path; its arguments: "
                                      r"path, templates='openai', split='test'$"),
    ("eval.tasks.x={type: retrieval, path: /d, templates: simple}",
     r"^config error: eval.tasks.x: task type 'retrieval' does not take templates; its arguments: path, split='test'"),
    ("eval.tasks.x={type: zeroshot, path: /d, templates: fancy}",
     r"^config error: eval.tasks.x: task type 'zeroshot': templates='fancy' is not 'openai' or 'simple'$"),
    ("eval.tasks.x={path: /d}", r"^config error: eval.tasks.x must be a mapping with a type"),
    ("eval.tasks.attributes={type: zeroshot, path: /d}",
     r"^config error: eval.tasks.attributes and eval.zeroshot.attributes name the same zeroshot task$"),
])
def test_a_task_argument_is_checked_against_the_registered_type_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_the_pixels_a_model_takes_are_its_own():
    assert load_config("clip_b16").model.image.resize == "crop"
    assert load_config("siglip_b16").model.image.resize == "squash"
    assert load_config("siglip_b16").model.image.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="model.image.resize='stretch' is not a valid choice"):
        load_config("demo", ["model.image.resize=stretch"])
    with pytest.raises(ConfigError, match=r"model.image.std=\(0.0, 0.5, 0.5\) is out of range"):
        load_config("demo", ["model.image.std=[0,0.5,0.5]"])
