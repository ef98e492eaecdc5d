"""Typed experiment config: dataclasses as OmegaConf structured configs, named YAML files,
dotted command-line overrides, and errors that name the key and list what is valid.

    cfg = load_config("demo", ["optim.lr=1e-3", "loss.name=siglip"])

A field with `choices` metadata only accepts those strings; `loss.name` accepts the names in
the losses registry. The resolved config is what a run saves as config.yaml.
"""
import dataclasses
import difflib
import importlib
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from contrastive.arguments import resolve


class ConfigError(ValueError):
    """A config problem a researcher can fix from the message alone."""


def choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


def at_least(default: Any, low: float) -> Any:
    """A finite number (or each number of a tuple) >= low."""
    return field(default=default, metadata={"interval": f"[{low}, inf)", "contains": lambda x: x >= low})


def above(default: Any, low: float) -> Any:
    """A finite number > low."""
    return field(default=default, metadata={"interval": f"({low}, inf)", "contains": lambda x: x > low})


def within(default: Any, interval: str) -> Any:
    """A number (or each number of a tuple) in an interval of 0 and 1: "[0, 1)", "(0, 1]" or "[0, 1]"."""
    low_ok = {"[": lambda x: x >= 0, "(": lambda x: x > 0}[interval[0]]
    high_ok = {"]": lambda x: x <= 1, ")": lambda x: x < 1}[interval[-1]]
    return field(default=default, metadata={"interval": interval, "contains": lambda x: low_ok(x) and high_ok(x)})


# OpenAI CLIP's pixel statistics (0-1 scale): what CLIP and OpenCLIP's models normalise with.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageTowerConfig:
    """Any timm model: `timm_name` fixes the architecture, `kwargs` (timm.create_model's keyword arguments)
    change it, e.g. {embed_dim: 384, num_heads: 6} or {drop_path_rate: 0.1}; the shape is said once."""

    timm_name: str = "vit_base_patch16_224"
    image_size: int = at_least(224, 1)  # input resolution; timm's img_size for models that take one
    kwargs: dict[str, Any] = field(default_factory=dict)
    mixture_tokens: int = at_least(8, 1)  # K register tokens of a ViT, for losses that score them (Llip)
    # The pixels the model takes: per-channel mean and std (0-1 scale) the tower normalises with on its device, and
    # how an image is made square without augmentation, in evaluation (training augments with a random crop).
    mean: tuple[float, float, float] = within(OPENAI_MEAN, "[0, 1]")
    std: tuple[float, float, float] = within(OPENAI_STD, "(0, 1]")
    resize: str = choice("crop", "crop", "squash")  # shorter side + centre crop (CLIP); whole image squashed (SigLIP)
    # false: the model's pooled output is the embedding, no projection (SigLIP's MAP head); its width is embed_dim
    projection: bool = True
    init_from: Optional[str] = None  # a run dir or checkpoint whose image tower this run starts from
    frozen: bool = False  # locked (LiT): eval mode, no gradient, not in the optimizer


@dataclass
class TextTowerConfig:
    context_length: int = at_least(77, 2)
    width: int = at_least(512, 1)
    depth: int = at_least(12, 1)
    heads: int = at_least(8, 1)
    mlp_ratio: float = above(4.0, 0)
    causal: bool = True  # CLIP: causal; SigLIP: bidirectional
    mask_pad_keys: bool = True  # bidirectional attention ignores pad keys (false: SigLIP's towers attend to them)
    # eot: the end token (the last non-pad); argmax: the highest token id (OpenCLIP's CLIP, where that is the end
    # token); last: the final position (SigLIP); mean: over non-pad positions
    pool: str = choice("eot", "eot", "argmax", "last", "mean")
    # quick_gelu: x sigmoid(1.702 x), OpenAI CLIP's; gelu_tanh: the tanh approximation, Hugging Face SigLIP's
    activation: str = choice("gelu", "gelu", "quick_gelu", "gelu_tanh")
    norm_eps: float = above(1e-5, 0)  # every LayerNorm's epsilon (1e-5: CLIP; 1e-6: SigLIP)
    projection_bias: bool = False  # a bias on the projection into the embedding (SigLIP's text head has one)
    # A bias on the attention's keys. It changes no output (softmax ignores a shift of all of a query's logits) and
    # trains on rounding noise alone, so towers trained here have none; imported ones keep the peer's, so that an
    # export gives back the tensors imported.
    key_bias: bool = False
    init_from: Optional[str] = None  # a run dir or checkpoint whose text tower this run starts from
    # a longer context than the init_from source's: long_clip keeps its first 20 positions and stretches the rest
    # (Long-CLIP), interpolate stretches all of them
    position_stretch: str = choice("long_clip", "long_clip", "interpolate")
    frozen: bool = False  # locked: eval mode, no gradient, not in the optimizer
    # How the tokenizer makes rows of ids (data/tokenizer.py): the text cleaning before tokenizing (clip: HTML
    # entities, whitespace, lower case; openclip: ftfy first, as OpenCLIP's CLIP; canonicalize: SigLIP's, also
    # punctuation stripped; canonicalize_hf: transformers' SiglipTokenizer's, without ftfy and HTML entities; none: the
    # tokenizer file's own normaliser, as Hugging Face's CLIP), whether rows start with
    # a start token (SigLIP's do not), and the pad id (null: a dedicated pad token, appended to the vocabulary if the
    # file has none; an id: that token pads, e.g. 0 for OpenCLIP's CLIP, the end token for SigLIP).
    clean: str = choice("clip", "clip", "openclip", "canonicalize", "canonicalize_hf", "none")
    start_token: bool = True
    pad_id: Optional[int] = None


@dataclass
class ModelConfig:
    embed_dim: int = at_least(512, 1)
    # a run dir (its latest checkpoint) or checkpoint file this run's weights start from: both towers and the loss's
    # scale and bias; the optimizer, schedule, step and data start fresh (contrastive/init_from.py)
    init_from: Optional[str] = None
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)


@dataclass
class DataConfig:
    shards: list[str] = field(default_factory=list)  # brace-expanded patterns; local paths or `pipe:` commands
    weights: list[float] = field(default_factory=list)  # sampling weight per pattern; empty = one pooled source
    tokenizer: str = MISSING  # path to a tokenizer.json (ours or Hugging Face's)
    workers: int = at_least(4, 0)
    shuffle_buffer: int = at_least(1000, 0)
    crop_scale: tuple[float, float] = within((0.9, 1.0), "(0, 1]")  # RandomResizedCrop scale range (OpenCLIP's default)


@dataclass
class OptimConfig:
    lr: float = at_least(5e-4, 0)
    weight_decay: float = at_least(0.2, 0)
    # lr: torch's AdamW, each step decays by lr_t x weight_decay; schedule: big_vision's (optax's) decoupled
    # decay, weight_decay x lr_t / lr, the schedule's factor without the base lr.
    weight_decay_scaling: str = choice("lr", "lr", "schedule")
    betas: tuple[float, float] = within((0.9, 0.98), "[0, 1)")
    eps: float = at_least(1e-6, 0)
    warmup_steps: int = at_least(2000, 0)
    min_lr_ratio: float = within(0.0, "[0, 1]")  # cosine decays to lr * min_lr_ratio
    clip_grad: float = at_least(1.0, 0)  # 0 disables clipping


@dataclass
class TrainConfig:
    steps: int = at_least(10_000, 1)
    batch_size: int = at_least(256, 1)  # global, across all ranks
    seed: int = 0
    precision: str = choice("bf16", "bf16", "fp32")
    device: str = choice("auto", "auto", "cpu", "cuda")
    accum_steps: int = at_least(1, 1)  # micro-batches per step; the contrastive batch stays whole
    log_every: int = at_least(50, 1)
    checkpoint_every: int = at_least(1000, 1)
    keep_checkpoints: int = at_least(3, 0)
    grad_checkpointing: bool = False
    # torch.compile: none; towers (each tower compiled in place); step (both towers and the loss as one function)
    compile: str = choice("none", "none", "towers", "step")
    strategy: str = choice("ddp", "ddp", "fsdp")  # over ranks: replicated, or FSDP2-sharded (contrastive/sharding.py)
    max_bad_steps: int = at_least(5, 1)  # consecutive NaN/inf steps before the run stops
    on_checkpoint_error: str = choice("stop", "stop", "continue")  # a failed write (disk full): stop, or warn and go on
    checkpoint_async: bool = False  # write checkpoints from a copy in CPU memory while training goes on
    collective_timeout_s: int = at_least(1800, 1)  # a rank waiting longer on the others fails instead of hanging


@dataclass
class EvalConfig:
    every_steps: int = at_least(0, 0)  # 0: only at the end of training
    # name -> {type: a registered task type (zeroshot, retrieval, ...), path: ..., the type's other arguments}
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    zeroshot: dict[str, str] = field(default_factory=dict)  # name -> dataset path: {type: zeroshot, path} for short
    retrieval: dict[str, str] = field(default_factory=dict)  # name -> dataset path: {type: retrieval, path}
    templates: str = choice("openai", "openai", "simple")  # the short forms' prompts for sets without their own
    batch_size: int = at_least(256, 1)
    workers: int = at_least(2, 0)


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    nodes: int = at_least(1, 1)
    gpus_per_node: int = at_least(8, 0)  # one task (process) per GPU
    tasks_per_node: Optional[int] = None  # None: one per GPU (one on a node without GPUs); set for CPU DDP
    cpus_per_task: int = at_least(10, 1)
    mem_gb: int = at_least(0, 0)  # 0: Slurm's default
    timeout_min: int = at_least(4320, 1)
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    comment: Optional[str] = None
    signal_delay_s: int = at_least(120, 0)  # USR2 this long before the time limit
    array_parallelism: int = at_least(64, 1)
    max_requeues: int = at_least(10, 0)
    extra: dict[str, str] = field(default_factory=dict)  # further sbatch parameters


@dataclass
class Config:
    run_dir: str = "runs/default"
    plugins: list[str] = field(default_factory=list)  # modules imported before the registries are read
    model: ModelConfig = field(default_factory=ModelConfig)
    # `name` (a registered loss) and that loss's own arguments (losses/registry.py); resolved, every argument
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "clip"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


CONFIG_PACKAGE = "contrastive.configs"


def named_configs() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(CONFIG_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
    else:
        if name_or_path not in named_configs():
            raise ConfigError(f"unknown config {name_or_path!r}{_did_you_mean(name_or_path, named_configs())}\n"
                              f"  named configs: {', '.join(named_configs())}")
        text = resources.files(CONFIG_PACKAGE).joinpath(f"{name_or_path}.yaml").read_text()
    data = _safe_yaml(text, f"config {name_or_path}")
    if not isinstance(data, dict):
        raise ConfigError(f"config {name_or_path} must be a mapping at the top level")
    return data


def _config_chain(name_or_path: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """A named config and the configs it inherits from with `base: NAME`, base first."""
    if name_or_path in seen:
        raise ConfigError(f"config {name_or_path} inherits from itself: {' -> '.join(seen + (name_or_path,))}")
    data = upgrade_legacy(_read_yaml(name_or_path))
    base = data.pop("base", None)
    chain = _config_chain(str(base), seen + (name_or_path,)) if base is not None else []
    return chain + [(name_or_path, data)]


def load_config(name_or_path: Optional[str] = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the named config (or a YAML path), then `key=value` overrides, validated."""
    chain = _config_chain(name_or_path) if name_or_path is not None else []
    return _load([(f"config {name}", data) for name, data in chain], overrides)


def from_yaml_text(text: str, overrides: list[str] = ()) -> Config:
    """A saved config.yaml (a run's resolved config, or a checkpoint's copy of it) back into a Config."""
    return _load([("saved config", upgrade_legacy(_safe_yaml(text, "saved config")))], overrides)


def _load(layers: list[tuple[str, dict[str, Any]]], overrides: list[str]) -> Config:
    """(source, data) layers merged in order, then the overrides, validated."""
    cfg = OmegaConf.structured(Config)
    for source, data in layers:
        cfg = _merge(_start_other_loss(cfg, (data.get("loss") or {}).get("name")), data, source=source)
    cfg = _start_other_loss(cfg, _overridden_loss_name(overrides))
    for override in overrides:
        cfg = _apply_override(cfg, override)
    return _validate(cfg)


def _start_other_loss(cfg: DictConfig, name: Optional[str]) -> DictConfig:
    """A config (or the command line) that names another loss starts that loss's arguments afresh: the ones set
    before belong to the loss it replaces (`-c llip_b16 loss.name=clip` is CLIP with llip_b16's towers)."""
    if name is not None and name != cfg.loss.get("name"):
        cfg.loss = {"name": name}
    return cfg


def _overridden_loss_name(overrides: list[str]) -> Optional[str]:
    name = None
    for override in overrides:
        key, _, raw = override.partition("=")
        if key.strip() == "loss.name":
            name = raw.strip()
        elif key.strip() == "loss":
            name = None  # the whole section replaced: it says its own name
    return name


# Keys of files written before each loss owned its arguments and the image tower took any timm model.
LEGACY_IMAGE_KEYS = {"patch_size": "patch_size", "width": "embed_dim", "depth": "depth", "heads": "num_heads",
                     "mlp_ratio": "mlp_ratio", "global_pool": "global_pool", "patch_drop_rate": "patch_drop_rate"}


def upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A config file (or a run's config.yaml) written with the keys of before: the ViT's shape as fields of
    model.image, and the loss as the union of every loss's arguments, null for "the loss's default". Read as
    the same model and loss in today's keys; any other file is returned as it is."""
    compile_towers = (data.get("train") or {}).get("compile")
    if isinstance(compile_towers, bool):  # train.compile was true (both towers) or false
        data = {**data, "train": {**data["train"], "compile": "towers" if compile_towers else "none"}}
    image = (data.get("model") or {}).get("image") or {}
    if not isinstance(image, dict) or not LEGACY_IMAGE_KEYS.keys() & image.keys():
        return data
    loss = {k: v for k, v in (data.get("loss") or {}).items() if v is not None}
    if loss.get("name") in ("clip", "siglip"):  # clip and siglip were one loss with two objectives
        objective = loss.pop("objective", "softmax" if loss["name"] == "clip" else "sigmoid")
        loss["name"] = {"softmax": "clip", "sigmoid": "siglip"}[objective]
        if loss["name"] == "clip":
            loss.pop("exchange", None)  # all_gather, the only one softmax has
    kwargs = {new: image[old] for old, new in LEGACY_IMAGE_KEYS.items() if old in image}
    if loss.get("name") == "llip":
        kwargs.pop("global_pool", None)  # the mixture-token ViT pooled nothing
    upgraded_image = {k: v for k, v in image.items() if k not in LEGACY_IMAGE_KEYS}
    upgraded_image["kwargs"] = {**kwargs, **upgraded_image.get("kwargs", {})}
    return {**data, "model": {**data["model"], "image": upgraded_image}, **({"loss": loss} if loss else {})}


def _safe_yaml(text: str, source: str) -> Any:
    """Plain YAML data only: tags that build Python objects (`!!python/object`) are refused, never run."""
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config error: {source} is not valid YAML data: {' '.join(str(e).split())}") from None


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_flat_dict(cfg: Config) -> dict[str, Any]:
    """{'optim.lr': 5e-4, ...}: what `diff` compares and what reports show."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(OmegaConf.structured(cfg)), "")
    return flat


def diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    fa, fb = to_flat_dict(a), to_flat_dict(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)}


def _apply_override(cfg: DictConfig, override: str) -> DictConfig:
    """`key=value` replaces what is at key: `eval.zeroshot={}` empties the mapping, `eval.zeroshot.x=P` adds x."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value (e.g. optim.lr=1e-3)")
    key, raw = (part.strip() for part in override.split("=", 1))
    _check_key(key)
    is_list = isinstance(_field_default(key), list)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        # Not YAML: a list of brace patterns ([a/{0..7}.tar,b/{0..3}.tar], which YAML reads as flow mappings), or
        # a string as typed (e.g. an unbalanced bracket in a path).
        value = _bracketed_items(raw) if is_list and raw.startswith("[") and raw.endswith("]") else raw
    if is_list and not isinstance(value, list):
        value = [value]  # data.shards=a/{000..009}.tar means a one-element list
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config error: {key}: {str(e).splitlines()[0]} (in override {override!r})") from None
    return cfg


def _bracketed_items(raw: str) -> list[str]:
    """`[a/{0..7}.tar, b/{0,1}.tar]` -> ["a/{0..7}.tar", "b/{0,1}.tar"]: split at the commas outside braces."""
    items, depth, current = [], 0, []
    for char in raw[1:-1]:
        if char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _resolve_field(key: str) -> dataclasses.Field:
    cls: Any = Config
    fld = None
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            break
        fields = {f.name: f for f in dataclasses.fields(cls)}
        fld = fields[part]
        cls = fld.type
    assert fld is not None
    return fld


def _field_default(key: str) -> Any:
    fld = _resolve_field(key)
    if fld.default_factory is not dataclasses.MISSING:
        return fld.default_factory()
    return fld.default



def _check_key(key: str) -> None:
    """Every dotted key must name a field; the error lists the valid keys at that level."""
    cls: Any = Config
    path = ""
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            if typing.get_origin(cls) is dict:
                return  # free-form mapping (eval.zeroshot.NAME, slurm.extra.KEY)
            raise ConfigError(f"config error: {path} is a value, not a section; {key} does not exist")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            where = f"{path}" if path else "the config"
            legacy_shape = path == "model.image" and part in LEGACY_IMAGE_KEYS
            hint = (f"; the tower's shape is timm's: model.image.kwargs.{LEGACY_IMAGE_KEYS[part]}" if legacy_shape
                    else _did_you_mean(part, fields, prefix=path))
            raise ConfigError(f"config error: {path + '.' if path else ''}{part} is not a key of {where} "
                              f"({cls.__name__}){hint}\n  valid keys: {', '.join(fields)}")
        cls = fields[part].type
        path = f"{path}.{part}" if path else part


def _did_you_mean(word: str, candidates: Any, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""


def _merge(cfg: DictConfig, data: dict[str, Any], source: str) -> DictConfig:
    for key in _flat_keys(data):
        try:
            _check_key(key)
        except ConfigError as e:
            raise ConfigError(f"{e} (in {source})") from None
    try:
        merged = OmegaConf.merge(cfg, data)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ", ".join(_flat_keys(data))
        raise ConfigError(f"config error: {key}: {str(e).splitlines()[0]} (in {source})") from None
    for key in _flat_keys(data):  # a merge keeps the value that a '???' (a required key) would replace
        if _value_at(data, key) == MISSING:
            OmegaConf.update(merged, key, MISSING, merge=False)
    return merged


def _value_at(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not _is_mapping_field(key):
            keys += _flat_keys(v, f"{key}.")
        else:
            keys.append(key)
    return keys


def _is_mapping_field(key: str) -> bool:
    try:
        _check_key(key)
        return isinstance(_field_default(key), dict)
    except (ConfigError, KeyError):
        return False


# May stay '???' after loading: a command that needs it says so (data.tokenizer: eval reads the run's own).
MAY_STAY_MISSING = ("data.tokenizer",)


def _validate(cfg: DictConfig) -> Config:
    required = [key for key in _missing_keys(cfg) if key not in MAY_STAY_MISSING]
    if required:
        raise ConfigError(f"config error: {', '.join(required)} must be set: the config leaves "
                          f"{'it' if len(required) == 1 else 'them'} '???' (required), e.g. {required[0]}=...")
    obj: Config = OmegaConf.to_object(cfg) if not OmegaConf.is_missing(cfg.data, "tokenizer") else _with_missing(cfg)
    _check_choices(obj, "")
    import_plugins(obj.plugins)
    obj.loss = _resolved_loss(obj.loss)
    obj.eval.tasks = {name: _resolved_task(name, spec, obj.eval) for name, spec in obj.eval.tasks.items()}
    if obj.optim.weight_decay_scaling == "schedule" and obj.optim.lr == 0 and obj.optim.weight_decay > 0:
        raise ConfigError("config error: optim.weight_decay_scaling=schedule divides the decay by optim.lr, which is 0")
    if obj.train.compile == "step" and obj.train.accum_steps > 1:
        raise ConfigError(f"config error: train.compile=step compiles the whole-batch step, which "
                          f"train.accum_steps={obj.train.accum_steps} splits; use train.compile=towers")
    if obj.data.crop_scale[0] > obj.data.crop_scale[1]:
        raise ConfigError(f"config error: data.crop_scale={obj.data.crop_scale} must be (low, high) with low <= high")
    if not obj.run_dir.strip():
        raise ConfigError("config error: run_dir is empty; name the run's directory, e.g. run_dir=runs/my-run")
    return obj


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys whose value is '???' (OmegaConf's MISSING)."""
    keys = []
    for key in node:
        if OmegaConf.is_missing(node, key):
            keys.append(f"{prefix}{key}")
        elif isinstance(node[key], DictConfig):
            keys += _missing_keys(node[key], f"{prefix}{key}.")
    return keys


def _with_missing(cfg: DictConfig) -> Config:
    """to_object refuses MISSING values; keep '???' for keys a command may not need (data.tokenizer)."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return _build(Config, container)


def _build(cls: Any, data: dict[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = data[f.name]
        kwargs[f.name] = _build(f.type, value) if dataclasses.is_dataclass(f.type) else value
    return cls(**kwargs)


def _check_choices(node: Any, prefix: str) -> None:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{key}.")
        elif "choices" in f.metadata and value not in f.metadata["choices"]:
            choices = f.metadata["choices"]
            raise ConfigError(f"config error: {key}={value!r} is not a valid choice"
                              f"{_did_you_mean(str(value), choices)}\n  valid: {', '.join(choices)}")
        elif "interval" in f.metadata:
            numbers = value if isinstance(value, tuple) else (value,)
            if not all(math.isfinite(x) and f.metadata["contains"](x) for x in numbers):
                raise ConfigError(f"config error: {key}={value!r} is out of range: expected "
                                  f"{'numbers' if isinstance(value, tuple) else 'a number'} in "
                                  f"{f.metadata['interval']}")


def _resolved_loss(loss: dict[str, Any]) -> dict[str, Any]:
    """The loss's name and every one of its arguments (given, or its default), checked against its class."""
    import losses

    given = dict(loss)
    name = given.pop("name", None)
    known = losses.names()
    if name not in known:
        raise ConfigError(f"config error: loss.name={name!r} is not a registered loss"
                          f"{_did_you_mean(str(name), known)}\n  valid: {', '.join(known)}")
    try:
        return {"name": name, **resolve(losses.get(name), given, f"loss {name!r}", supplied=losses.MODEL_SUPPLIED)}
    except ValueError as e:
        misspelt_name = next((_did_you_mean(key, ["name"], prefix="loss") for key in given), "")
        raise ConfigError(f"config error: loss: {e}{misspelt_name}") from None


def _resolved_task(name: str, spec: Any, eval_cfg: EvalConfig) -> dict[str, Any]:
    """The task's type and every one of its arguments, checked against the registered type."""
    key = f"eval.tasks.{name}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"config error: {key} must be a mapping with a type, e.g. "
                          f"{key}={{type: zeroshot, path: DIR}}")
    if not name or "/" in name:
        raise ConfigError(f"config error: {key}: a task name is non-empty and without '/' (it is part of metric "
                          "names)")
    from eval import EvalError, get_task

    given = dict(spec)
    type_name = given.pop("type")
    try:
        cls = get_task(str(type_name))
    except EvalError as e:
        raise ConfigError(f"config error: {key}.type: {e}") from None
    if name in {"zeroshot": eval_cfg.zeroshot, "retrieval": eval_cfg.retrieval}.get(type_name, {}):
        raise ConfigError(f"config error: {key} and eval.{type_name}.{name} name the same {type_name} task")
    try:
        return {"type": type_name, **resolve(cls, given, f"task type {type_name!r}")}
    except ValueError as e:
        raise ConfigError(f"config error: {key}: {e}") from None


def import_plugins(modules: list[str]) -> None:
    """Import the config's `plugins:` (modules that register losses, say), found on sys.path or in the current
    directory, as `python -m` finds them. Importing one twice does nothing."""
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - whatever the module raises, the message names the plugin
            detail = f"{type(e).__name__}: {e}" if not isinstance(e, ModuleNotFoundError) else str(e)
            raise ConfigError(f"config error: plugins: cannot import {module!r} ({detail})") from None
