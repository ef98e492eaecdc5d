"""Hugging Face transformers' CLIPModel and SiglipModel folders: config.json and preprocessor_config.json as our
config keys, model.safetensors' state dict as ours; and back, our model as those files.

    overrides = config_overrides(config, preprocessor)     # config.json, preprocessor_config.json (or None)
    model = build_model(cfg.model, cfg.loss, vocab_size=..., pad_id=...)   # cfg = load_config(None, overrides)
    model.load_state_dict(convert_state_dict(state_dict, config))

    config, preprocessor = export_config(cfg, vocab_size, TokenIds(start=0, end=1, pad=2))
    state_dict = export_state_dict(model.state_dict(), cfg)

CLIP's image tower is timm's CLIP ViT (a LayerNorm before the blocks, the class token pooled, a projection);
SigLIP's is timm's SigLIP ViT (no class token, the MAP head as timm's attention pool, whose output is the
embedding). CLIP's text tower is causal and pooled at the end token as the highest id; SigLIP's is bidirectional,
attends to the pads, is pooled at the row's last position and projected with a bias. The text attention's key bias
is kept (model.text.key_bias) so that an export gives it back, though softmax ignores it. config.json keys that do
not change the forward (names, output and generation settings, token ids, initialisation, dropout) are ignored by
name; any other key this mapping does not read is an error naming it, as is any tensor it does not know.

The export writes a CLIPModel for loss clip and a SiglipModel for loss siglip, each only from an image tower that is
the ViT the import builds for it (timm's CLIP ViT, timm's SigLIP ViT, in any shape) and a text tower that computes as
transformers' does. CLIPModel pools the text at the first end token, our eot, unless the end token is 2, where it
takes the highest id, our argmax (its legacy rule). What transformers cannot express is one FormatError from the
config alone. The tensor names of both directions come from one table (contrastive/openclip_format.py's Entry).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from contrastive.config import OPENAI_MEAN, OPENAI_STD, Config, ImageTowerConfig, ModelConfig, TextTowerConfig
from contrastive.errors import FormatError
from contrastive.peer_models import (CLIP_VIT, EXPORT_HINT, SIGLIP_VIT, ViTShape, as_peers_compute, exported_loss,
                                     mlp_ratio, vit_shape)
from contrastive.state_mapping import (BATCHED, CLASS_TOKEN, Entry, Rule, block_entries, export_rules, import_rules,
                                       mapped, refuse_unknown)

# PreTrainedConfig's own keys, which transformers 4 wrote into every sub-config: names, output and generation
# settings, token ids. None of them changes the forward of these models.
GENERIC_KEYS = {
    "_name_or_path", "_commit_hash", "_attn_implementation_autoset", "add_cross_attention", "architectures",
    "bad_words_ids", "begin_suppress_tokens", "bos_token_id", "chunk_size_feed_forward",
    "cross_attention_hidden_size", "decoder_start_token_id", "diversity_penalty", "do_sample", "dtype",
    "early_stopping", "encoder_no_repeat_ngram_size", "eos_token_id", "exponential_decay_length_penalty",
    "finetuning_task", "forced_bos_token_id", "forced_eos_token_id", "gradient_checkpointing", "id2label",
    "is_decoder", "is_encoder_decoder", "label2id", "length_penalty", "max_length", "min_length", "model_type",
    "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_return_sequences", "output_attentions",
    "output_hidden_states", "output_scores", "pad_token_id", "prefix", "problem_type", "remove_invalid_values",
    "repetition_penalty", "return_dict", "return_dict_in_generate", "sep_token_id", "suppress_tokens",
    "task_specific_params", "temperature", "tf_legacy_loss", "tie_encoder_decoder", "tie_word_embeddings",
    "tokenizer_class", "top_k", "top_p", "torch_dtype", "torchscript", "transformers_version", "typical_p",
    "use_bfloat16",
}
# Initialisation and dropout (off in eval). CLIPModel projects with the top-level projection_dim; the sub-configs'
# are for CLIPTextModelWithProjection and CLIPVisionModelWithProjection.
IGNORED = GENERIC_KEYS | {"initializer_range", "initializer_factor", "logit_scale_init_value", "attention_dropout",
                          "dropout"}
CLIP_IGNORED = IGNORED | {"projection_dim"}
UNPRUNED = {"pruned_heads": {}}

# transformers' hidden_act -> ours (and timm's act_layer); gelu_new is the tanh approximation written out.
ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
HIDDEN_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}  # ours -> transformers'

TEXT_WHERE, VISION_WHERE = "config.json's text_config", "config.json's vision_config"
# What transformers assumes for the keys a config.json leaves out (config.json stores only what differs). The
# vocab_size is build_model's argument (the import's, from the tokenizer files), read here for CLIP's end token.
CLIP_TOP = {"text_config": None, "vision_config": None, "text_config_dict": None, "vision_config_dict": None,
            "projection_dim": 512}
CLIP_TEXT = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
             "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
             "layer_norm_eps": 1e-5, "eos_token_id": 49407}
CLIP_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"}
SIGLIP_TOP = {"text_config": None, "vision_config": None}
SIGLIP_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "max_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
               "projection_size": None, "vocab_size": 32000}
SIGLIP_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh"}
# The vision towers' LayerNorm epsilon is fixed by the timm model (CLIP's 1e-5, timm's default 1e-6).
CLIP_VISION_FIXED = {**UNPRUNED, "num_channels": 3, "layer_norm_eps": 1e-5}
SIGLIP_VISION_FIXED = {**UNPRUNED, "num_channels": 3, "layer_norm_eps": 1e-6, "vision_use_head": True}

BICUBIC = 3  # PIL's resample code for what our eval transform (data/decode.py square_pixels) resizes with
PIXELS_FIXED = {"do_resize": True, "resample": BICUBIC, "do_rescale": True, "rescale_factor": 1 / 255}
PIXELS_IGNORED = {"image_processor_type", "feature_extractor_type", "processor_class", "do_convert_rgb"}
PIXEL_DEFAULTS = {  # CLIPImageProcessor's and SiglipImageProcessor's
    "clip": {"size": {"shortest_edge": 224}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
             "do_normalize": True, "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD},
    "siglip": {"size": {"height": 224, "width": 224}, "do_center_crop": False, "crop_size": None,
               "do_normalize": True, "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5)},
}


def config_overrides(config: Mapping[str, Any], preprocessor: Mapping[str, Any] | None) -> list[str]:
    """Our config's keys for a CLIPModel's or SiglipModel's config.json and preprocessor_config.json (None: the
    family's normalisation and resize). The pad id is the tokenizer files' and not among them."""
    family = _family(config)
    overrides, image_size = TOWERS[family](config)
    return overrides + _pixels(preprocessor, family, image_size)


def _family(config: Mapping[str, Any]) -> str:
    model_type = config.get("model_type")
    if model_type not in TOWERS:
        raise FormatError(f"config.json has model_type {model_type!r}; this import reads {', '.join(TOWERS)}")
    return model_type


def _clip(config: Mapping[str, Any]) -> tuple[list[str], int]:
    top = _read(config, CLIP_TOP, "config.json")
    # transformers lets the *_config_dict of older files override *_config
    text = _read({**(top["text_config"] or {}), **(top["text_config_dict"] or {})}, CLIP_TEXT, TEXT_WHERE,
                 ignored=CLIP_IGNORED)
    vision = _read({**(top["vision_config"] or {}), **(top["vision_config_dict"] or {})}, CLIP_VISION,
                   VISION_WHERE, CLIP_VISION_FIXED, CLIP_IGNORED)
    eos, vocab_size = text["eos_token_id"], text["vocab_size"]
    if eos not in (2, vocab_size - 1):
        raise FormatError(f"{TEXT_WHERE}.eos_token_id is {eos!r}: transformers pools CLIP's text at "
                          f"the first end token and this import at the highest id (pool=argmax), the same token only "
                          f"when the end token is the vocabulary's last id ({vocab_size - 1}) or, by transformers' "
                          "legacy rule, when eos_token_id is 2")
    image_size = _square(vision["image_size"], f"{VISION_WHERE}.image_size")
    return [
        "loss.name=clip", f"model.embed_dim={top['projection_dim']}",
        f"model.image.timm_name={CLIP_VIT}", f"model.image.image_size={image_size}",
        f"model.image.kwargs={_vit_kwargs(vision)}", "model.image.projection=true",
        *_text_shape(text), "model.text.causal=true", "model.text.mask_pad_keys=true", "model.text.pool=argmax",
        "model.text.projection_bias=false", "model.text.key_bias=true", "model.text.clean=none",
        "model.text.start_token=true",
    ], image_size


def _siglip(config: Mapping[str, Any]) -> tuple[list[str], int]:
    top = _read(config, SIGLIP_TOP, "config.json")
    text = _read(top["text_config"] or {}, SIGLIP_TEXT, TEXT_WHERE)
    vision = _read(top["vision_config"] or {}, SIGLIP_VISION, VISION_WHERE, SIGLIP_VISION_FIXED)
    embed_dim = text["projection_size"] or text["hidden_size"]
    if embed_dim != vision["hidden_size"]:
        raise FormatError(f"{TEXT_WHERE}.projection_size is {embed_dim} and vision_config.hidden_size "
                          f"{vision['hidden_size']}: SigLIP's image embedding is its MAP head's output, as wide as "
                          "the vision tower, so the text embedding must be too")
    image_size = _square(vision["image_size"], f"{VISION_WHERE}.image_size")
    return [
        "loss.name=siglip", f"model.embed_dim={embed_dim}",
        f"model.image.timm_name={SIGLIP_VIT}", f"model.image.image_size={image_size}",
        f"model.image.kwargs={_vit_kwargs(vision)}", "model.image.projection=false",
        *_text_shape(text), "model.text.causal=false", "model.text.mask_pad_keys=false", "model.text.pool=last",
        "model.text.projection_bias=true", "model.text.key_bias=true", "model.text.clean=canonicalize_hf",
        "model.text.start_token=false",
    ], image_size


TOWERS: dict[str, Callable[[Mapping[str, Any]], tuple[list[str], int]]] = {"clip": _clip, "siglip": _siglip}


def _read(cfg: Mapping[str, Any], defaults: Mapping[str, Any], where: str, fixed: Mapping[str, Any] = UNPRUNED,
          ignored: set[str] = IGNORED) -> dict[str, Any]:
    """The keys this mapping reads, as `cfg` sets them or transformers' `defaults`; a key neither read, `fixed` nor
    `ignored` is an error naming it, as is a `fixed` key at another value."""
    refuse_unknown({k: v for k, v in cfg.items() if k not in ignored}, defaults.keys() | fixed.keys(), where)
    for key, value in fixed.items():
        if key in cfg and cfg[key] != value:
            raise FormatError(f"{where} sets {key}={cfg[key]!r}, which this import cannot express (only {value!r})")
    return {key: cfg.get(key, default) for key, default in defaults.items()}


def _activation(tower: Mapping[str, Any], where: str) -> str:
    if tower["hidden_act"] not in ACTIVATIONS:
        raise FormatError(f"{where}.hidden_act is {tower['hidden_act']!r}, which this import cannot express (it "
                          f"knows {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[tower["hidden_act"]]


def _mlp_ratio(tower: Mapping[str, Any]) -> float:
    return mlp_ratio(tower["intermediate_size"], tower["hidden_size"])


def _square(value: int | list[int], where: str) -> int:
    """An int, or [n, n] (transformers accepts both for image_size and patch_size)."""
    if isinstance(value, int):
        return value
    if len(value) == 2 and value[0] == value[1]:
        return value[0]
    raise FormatError(f"{where} is {value}: our ViTs take square images and patches")


def _vit_kwargs(vision: Mapping[str, Any]) -> str:
    kwargs = {"patch_size": _square(vision["patch_size"], f"{VISION_WHERE}.patch_size"),
              "embed_dim": vision["hidden_size"], "depth": vision["num_hidden_layers"],
              "num_heads": vision["num_attention_heads"], "mlp_ratio": _mlp_ratio(vision),
              "act_layer": _activation(vision, VISION_WHERE)}
    return "{" + ", ".join(f"{k}: {v}" for k, v in kwargs.items()) + "}"


def _text_shape(text: Mapping[str, Any]) -> list[str]:
    return [
        f"model.text.context_length={text['max_position_embeddings']}", f"model.text.width={text['hidden_size']}",
        f"model.text.depth={text['num_hidden_layers']}", f"model.text.heads={text['num_attention_heads']}",
        f"model.text.mlp_ratio={_mlp_ratio(text)}",
        f"model.text.activation={_activation(text, TEXT_WHERE)}", f"model.text.norm_eps={text['layer_norm_eps']}",
    ]


def _pixels(preprocessor: Mapping[str, Any] | None, family: str, image_size: int) -> list[str]:
    defaults = PIXEL_DEFAULTS[family]
    if preprocessor is None:
        resize = "crop" if defaults["do_center_crop"] else "squash"
        return [f"model.image.resize={resize}", *_normalisation(defaults["image_mean"], defaults["image_std"])]
    where = "preprocessor_config.json"
    pixels = _read(preprocessor, defaults, where, PIXELS_FIXED, PIXELS_IGNORED)
    resize, side = _resize(pixels["size"], pixels["crop_size"] if pixels["do_center_crop"] else None)
    if side != image_size:
        raise FormatError(f"{where} makes {side}-pixel images, but {VISION_WHERE}.image_size is {image_size}")
    mean, std = (pixels["image_mean"], pixels["image_std"]) if pixels["do_normalize"] else ((0, 0, 0), (1, 1, 1))
    return [f"model.image.resize={resize}", *_normalisation(mean, std)]


def _resize(size: int | Mapping[str, int], crop: int | Mapping[str, int] | None) -> tuple[str, int]:
    """(our resize mode, the side of the square image) for transformers' size and centre crop (None: no crop).
    As transformers reads them, an int size is the shortest edge and an int crop a square."""
    size = {"shortest_edge": size} if isinstance(size, int) else dict(size)
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    crop_side = None if crop is None else _square_side(crop)
    if crop_side is not None and size == {"shortest_edge": crop_side}:
        return "crop", crop_side
    if _square_side(size) is not None and crop in (None, size):
        return "squash", size["height"]
    raise FormatError(f"preprocessor_config.json resizes to size={size}"
                      + (f" and centre-crops to crop_size={dict(crop)}" if crop is not None else "")
                      + ": our eval transform resizes the shorter side and centre-crops a square of that size "
                        "(resize=crop), or resizes the whole image to a square (resize=squash)")


def _square_side(size: Mapping[str, int]) -> int | None:
    return size["height"] if size.keys() == {"height", "width"} and size["height"] == size["width"] else None


def _normalisation(mean: Any, std: Any) -> list[str]:
    return [f"model.image.mean=[{', '.join(map(str, mean))}]", f"model.image.std=[{', '.join(map(str, std))}]"]


VISION_BLOCK = {"self_attn.{qkv_proj}.{param}": "attn.qkv.{param}", "layer_norm1.{param}": "norm1.{param}",
                "self_attn.out_proj.{param}": "attn.proj.{param}", "layer_norm2.{param}": "norm2.{param}",
                "mlp.fc1.{param}": "mlp.fc1.{param}", "mlp.fc2.{param}": "mlp.fc2.{param}"}
TEXT_BLOCK = {"self_attn.{qkv_proj}.weight": "qkv.weight", "self_attn.{qkv}_proj.bias": "{qkv}_bias",
              "layer_norm1.{param}": "attn_norm.{param}", "self_attn.out_proj.{param}": "attn_out.{param}",
              "layer_norm2.{param}": "mlp_norm.{param}", "mlp.fc1.{param}": "mlp.0.{param}",
              "mlp.fc2.{param}": "mlp.2.{param}"}
COMMON = [
    Entry("vision_model.embeddings.patch_embedding.{param}", "image_tower.trunk.patch_embed.proj.{param}"),
    Entry("vision_model.embeddings.position_embedding.weight", "image_tower.trunk.pos_embed", BATCHED),
    *block_entries("vision_model.encoder.layers", "image_tower.trunk.blocks", VISION_BLOCK),
    Entry("vision_model.post_layernorm.{param}", "image_tower.trunk.norm.{param}"),
    Entry("text_model.embeddings.token_embedding.weight", "text_tower.token_embedding.weight"),
    Entry("text_model.embeddings.position_embedding.weight", "text_tower.positional_embedding"),
    *block_entries("text_model.encoder.layers", "text_tower.blocks", TEXT_BLOCK),
    Entry("text_model.final_layer_norm.{param}", "text_tower.final_norm.{param}"),
]
CLIP_ENTRIES = [
    *COMMON,
    Entry("vision_model.embeddings.class_embedding", "image_tower.trunk.cls_token", CLASS_TOKEN),
    Entry("vision_model.pre_layrnorm.{param}", "image_tower.trunk.norm_pre.{param}"),
    Entry("visual_projection.weight", "image_tower.projection.weight"),
    Entry("text_projection.weight", "text_tower.projection.weight"),
    Entry("logit_scale", "loss.logit_scale"),
]
MAP_HEAD = {"attention.in_proj_{param}": "{q_kv}.{param}", "attention.out_proj.{param}": "proj.{param}",
            "layernorm.{param}": "norm.{param}", "mlp.fc1.{param}": "mlp.fc1.{param}",
            "mlp.fc2.{param}": "mlp.fc2.{param}"}
SIZE_ONE = (lambda v: v.reshape(()), lambda v: v.reshape(1))  # SiglipModel's logit scale and bias are [1]
SIGLIP_ENTRIES = [
    *COMMON,
    Entry("vision_model.head.probe", "image_tower.trunk.attn_pool.latent"),
    *(Entry(f"vision_model.head.{hf}", f"image_tower.trunk.attn_pool.{mine}") for hf, mine in MAP_HEAD.items()),
    Entry("text_model.head.{param}", "text_tower.projection.{param}"),
    Entry("logit_scale", "loss.logit_scale", SIZE_ONE),
    Entry("logit_bias", "loss.logit_bias", SIZE_ONE),
]
POSITION_IDS: Rule = (re.compile(r"(?:text|vision)_model\.embeddings\.position_ids"), lambda value: {})  # 0, 1, 2, ...
# family -> (the source as errors name it, what its entries look like, its entries)
FORMATS: dict[str, tuple[str, str, list[Entry]]] = {
    "clip": ("Hugging Face CLIPModel", "a CLIPModel has text_model.*, vision_model.*, visual_projection, "
             "text_projection, logit_scale", CLIP_ENTRIES),
    "siglip": ("Hugging Face SiglipModel", "a SiglipModel has text_model.* (with a head), vision_model.* (with a "
               "MAP head), logit_scale, logit_bias", SIGLIP_ENTRIES),
}


def convert_state_dict(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A CLIPModel's or SiglipModel's entries (config: its config.json) -> ours (ContrastiveModel with the config
    config_overrides gives)."""
    source, hint, entries = FORMATS[_family(config)]
    return mapped(state, [*import_rules(entries), POSITION_IDS], source, hint, "our")


@dataclass(frozen=True)
class TokenIds:
    """The ids in the rows the exported tokenizer makes: its start token (None: rows have none), end token, pad."""
    start: int | None
    end: int
    pad: int


def export_config(cfg: Config, vocab_size: int, token_ids: TokenIds) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json and preprocessor_config.json for our model: the CLIPModel (loss clip) or SiglipModel (loss siglip)
    transformers builds from them is the same model."""
    return EXPORTS[exported_loss(cfg)](cfg.model, vocab_size, token_ids)


def _export_clip(model: ModelConfig, vocab_size: int, ids: TokenIds) -> tuple[dict[str, Any], dict[str, Any]]:
    shape = vit_shape(model, CLIP_VIT, "transformers' CLIPModel's image tower")
    _require("model.image", model.image, {"projection": True}, "transformers' CLIPModel projects its image embedding")
    _require("model.text", model.text, {"causal": True, "projection_bias": False},
             "transformers' CLIPModel's text tower is causal and projects without a bias")
    pools_alike = {"eot": ids.end != 2, "argmax": ids.end in (2, vocab_size - 1)}
    if not pools_alike.get(model.text.pool, False):
        raise FormatError(f"model.text.pool={model.text.pool} with end token {ids.end} of {vocab_size}: transformers' "
                          "CLIPModel pools its text at the first end token (our eot), or at the highest id where the "
                          "end token is 2 (its legacy rule; our argmax, as is the first end token where it is the "
                          "last id)")
    square = {"height": model.image.image_size, "width": model.image.image_size}
    resize = {"size": {"shortest_edge": model.image.image_size} if model.image.resize == "crop" else square,
              "do_center_crop": model.image.resize == "crop", "crop_size": square}
    config = {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": model.embed_dim,
              "text_config": _text_config(model.text, vocab_size, ids),
              "vision_config": _vision_config(shape, model.image.image_size)}
    return config, _preprocessor("CLIPImageProcessor", model.image, resize)


def _export_siglip(model: ModelConfig, vocab_size: int, ids: TokenIds) -> tuple[dict[str, Any], dict[str, Any]]:
    shape = vit_shape(model, SIGLIP_VIT, "transformers' SiglipModel's image tower")
    _require("model.image", model.image, {"projection": False, "resize": "squash"},
             "transformers' SiglipModel's image embedding is its MAP head's output, unprojected, of an image its "
             "SiglipImageProcessor resizes whole to a square")
    _require("model.text", model.text, {"causal": False, "mask_pad_keys": False, "pool": "last",
                                        "projection_bias": True},
             "transformers' SiglipModel's text tower is bidirectional, attends to the pads, pools the last position "
             "and projects with a bias")
    config = {"model_type": "siglip", "architectures": ["SiglipModel"],
              "text_config": {**_text_config(model.text, vocab_size, ids), "projection_size": model.embed_dim},
              "vision_config": _vision_config(shape, model.image.image_size)}
    side = model.image.image_size
    return config, _preprocessor("SiglipImageProcessor", model.image, {"size": {"height": side, "width": side}})


EXPORTS: dict[str, Callable[[ModelConfig, int, TokenIds], tuple[dict[str, Any], dict[str, Any]]]] = {
    "clip": _export_clip, "siglip": _export_siglip}


def _require(section: str, values: Any, required: Mapping[str, Any], reason: str) -> None:
    for key, value in required.items():
        if getattr(values, key) != value:
            said = getattr(values, key)
            raise FormatError(f"{section}.{key}={str(said).lower() if isinstance(said, bool) else said}: {reason}")


def _text_config(text: TextTowerConfig, vocab_size: int, ids: TokenIds) -> dict[str, Any]:
    return {"vocab_size": vocab_size, "hidden_size": text.width, "intermediate_size": int(text.width * text.mlp_ratio),
            "num_hidden_layers": text.depth, "num_attention_heads": text.heads,
            "max_position_embeddings": text.context_length, "hidden_act": HIDDEN_ACTS[text.activation],
            "layer_norm_eps": text.norm_eps, "bos_token_id": ids.start, "eos_token_id": ids.end,
            "pad_token_id": ids.pad}


def _vision_config(shape: ViTShape, image_size: int) -> dict[str, Any]:
    return {"hidden_size": shape.embed_dim, "intermediate_size": int(shape.embed_dim * shape.mlp_ratio),
            "num_hidden_layers": shape.depth, "num_attention_heads": shape.num_heads, "image_size": image_size,
            "patch_size": shape.patch_size, "hidden_act": HIDDEN_ACTS[shape.act_layer],
            "layer_norm_eps": shape.norm_eps}


def _preprocessor(processor: str, image: ImageTowerConfig, resize: Mapping[str, Any]) -> dict[str, Any]:
    """preprocessor_config.json as the processor saves it, for our eval transform: bicubic, rescaled, normalised."""
    return {"image_processor_type": processor, **PIXELS_FIXED, **resize, "do_normalize": True,
            "image_mean": list(image.mean), "image_std": list(image.std), "do_convert_rgb": True}


def export_state_dict(state: Mapping[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Our model's entries (export_config's model) -> transformers'."""
    _, _, entries = FORMATS[exported_loss(cfg)]
    return mapped(as_peers_compute(state, cfg), export_rules(entries), "this model", EXPORT_HINT, "transformers'")
