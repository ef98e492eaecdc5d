"""OpenCLIP's format for its OpenAI-style CLIP ViTs (ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, ...) and
its timm-trunk SigLIP models (ViT-B-16-SigLIP): its model config as our config keys, and its state dict as ours;
and back, our model as OpenCLIP's open_clip_config.json and state dict.

    model_cfg, preprocess_cfg = read_model_config(json.load(open("open_clip_config.json")))
    overrides = config_overrides(model_cfg, quick_gelu=None, preprocess_cfg=preprocess_cfg)
    model = build_model(cfg.model, cfg.loss, vocab_size, pad_id)   # cfg = load_config(None, overrides)
    model.load_state_dict(convert_state_dict(state_dict))

    config_json = export_config(cfg, vocab_size, eos_id, tokenizer_cfg)      # open_clip_config.json
    state_dict = export_state_dict(model.state_dict(), cfg)                  # open_clip_model.safetensors

CLIP: the image tower is timm's CLIP ViT (a LayerNorm before the blocks, OpenAI's ln_pre); the text tower is causal,
pooled at the highest token id as OpenCLIP pools CLIP (its end token is the vocabulary's last id; OpenCLIP pads
with 0), QuickGELU in both towers where the weights were trained with it.
SigLIP: the image tower is the timm model OpenCLIP names, with its pooling (the MAP head) as the embedding; the text
tower is bidirectional, attends to its pads (OpenCLIP builds it without a pad mask), pools the last position, and
has exact GELU (nn.GELU: OpenCLIP's default; only SigLIP 2's configs ask for the tanh approximation) or QuickGELU
with quick_gelu, which OpenCLIP applies to the text tower only: timm trunks keep their own activation.
OpenCLIP's "eos" pooling (at the first eos_id) is our eot (the last token before the pads): the same token in rows
whose pad is a token of its own.
The text attention's key bias is kept (model.text.key_bias) so that an export gives it back, though it changes no
output (it adds the same amount to every logit of a query, which softmax ignores); a tower without one exports
zeros. Anything this mapping does not know is an error naming the key or tensor, never a silent skip.

The export writes OpenCLIP's ViT for a tower that projects (timm's CLIP ViT in any shape), a timm trunk
(timm_model_name, its pooled output the embedding) for one that does not; CLIP's loss is OpenCLIP's CLIP, SigLIP's
its CustomTextCLIP with a logit bias. What OpenCLIP cannot express is one FormatError from the config alone. The
tensor names of both directions come from one table of entries (Entry).
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Iterable, Mapping

import timm
import torch
from torch import nn

from contrastive.config import OPENAI_MEAN, OPENAI_STD, Config, ModelConfig, TextTowerConfig
from contrastive.errors import FormatError
from contrastive.image_tower import ImageTower
from contrastive.peer_models import (CLIP_VIT, EXPORT_HINT, as_peers_compute, exported_loss, first_difference,
                                     vit_shape)
from contrastive.state_mapping import (BATCHED, CLASS_TOKEN, TRANSPOSED, Entry, block_entries, export_rules,
                                       import_rules, mapped, refuse_unknown)

HEAD_WIDTH = 64  # OpenCLIP's CLIPVisionCfg.head_width default: heads = width / 64
# OpenCLIP's model_cfg keys this mapping expresses; any other is refused (it would change the model).
# custom_text only says the text tower's tensors are under text.*; init_logit_bias makes the loss SigLIP's.
MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_bias"}
VISION_KEYS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
# timm_model_pretrained only says how OpenCLIP initialises the trunk, before the state dict replaces it.
TIMM_VISION_KEYS = {"image_size", "timm_model_name", "timm_model_pretrained", "timm_pool", "timm_proj"}
TOKENIZER_KEYS = {"hf_tokenizer_name", "tokenizer_kwargs"}
TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "no_causal_mask", "proj_bias",
             "pool_type", "eos_id", "norm_kwargs", *TOKENIZER_KEYS}
POOL_TYPES = {"argmax": "argmax", "eot": "eos", "last": "last"}  # our text pool -> OpenCLIP's pool_type
TEXT_POOLS = {theirs: ours for ours, theirs in POOL_TYPES.items()}
# OpenCLIP's text cleaning (tokenizer_kwargs.clean) -> ours; "whitespace" (no lower-casing) has no counterpart.
CLEAN = {"lower": "openclip", "canonicalize": "canonicalize"}
# Hugging Face tokenizers whose rows are known here: no start token, and the pad id (SigLIP's SentencePiece pads
# with its end token, 1). Without hf_tokenizer_name OpenCLIP tokenizes with its CLIP BPE: start token, pad 0.
HF_TOKENIZER_PADS = {"timm/ViT-B-16-SigLIP": 1}
PREPROCESS_KEYS = {"mean", "std", "interpolation", "resize_mode"}
RESIZE_MODES = {"shortest": "crop", "squash": "squash"}  # OpenCLIP's eval resize_mode -> our model.image.resize
# "random" interpolation is for training: OpenCLIP's eval transform then resizes bicubic, as ours does.
INTERPOLATIONS = ("bicubic", "random")
# Pixels where preprocess_cfg does not say them: OpenCLIP's PreprocessCfg defaults fill a given preprocess_cfg;
# without one, the family's, as OpenCLIP's pretrained tags say them (_pcfg for CLIP, _slpcfg for SigLIP).
OPENCLIP_PIXELS = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
SIGLIP_PIXELS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "squash"}

_OPENAI_TEXT = {"context_length": 77, "vocab_size": 49408}
# The architectures a bare state dict names with --arch: OpenCLIP's model_configs/NAME.json, as facts.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ViT-B-32": {"embed_dim": 512,
                 "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
                 "text_cfg": {**_OPENAI_TEXT, "width": 512, "heads": 8, "layers": 12}},
    "ViT-B-16": {"embed_dim": 512,
                 "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
                 "text_cfg": {**_OPENAI_TEXT, "width": 512, "heads": 8, "layers": 12}},
    "ViT-L-14": {"embed_dim": 768,
                 "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
                 "text_cfg": {**_OPENAI_TEXT, "width": 768, "heads": 12, "layers": 12}},
    "ViT-L-14-336": {"embed_dim": 768,
                     "vision_cfg": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
                     "text_cfg": {**_OPENAI_TEXT, "width": 768, "heads": 12, "layers": 12}},
    "ViT-H-14": {"embed_dim": 1024,
                 "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
                 "text_cfg": {**_OPENAI_TEXT, "width": 1024, "heads": 16, "layers": 24}},
    "ViT-B-16-SigLIP": {
        "embed_dim": 768, "init_logit_bias": -10, "custom_text": True,
        "vision_cfg": {"image_size": 224, "timm_model_name": "vit_base_patch16_siglip_224",
                       "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {"context_length": 64, "vocab_size": 32000, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                     "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 768, "heads": 12, "layers": 12,
                     "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}},
}
QUICK_GELU_SUFFIX = "-quickgelu"  # OpenCLIP's name for the same architecture with QuickGELU (OpenAI's weights)


def architecture(name: str) -> tuple[dict[str, Any], bool | None]:
    """The model_cfg of a known architecture and the activation its name says (True for NAME-quickgelu, else None:
    not said)."""
    base, quick_gelu = (name[: -len(QUICK_GELU_SUFFIX)], True) if name.endswith(QUICK_GELU_SUFFIX) else (name, None)
    if base not in ARCHITECTURES:
        raise FormatError(f"unknown OpenCLIP architecture {name!r}; known: {', '.join(ARCHITECTURES)} (each also as "
                          f"NAME{QUICK_GELU_SUFFIX})")
    return copy.deepcopy(ARCHITECTURES[base]), quick_gelu


def read_model_config(config_json: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """open_clip_config.json's {"model_cfg": ..., "preprocess_cfg": ...} -> (model_cfg, preprocess_cfg or None)."""
    if not isinstance(config_json, Mapping) or not isinstance(config_json.get("model_cfg"), Mapping):
        raise FormatError("this is not open_clip_config.json's layout: it holds {\"model_cfg\": {...}, "
                          "\"preprocess_cfg\": {...}}")
    refuse_unknown(config_json, {"model_cfg", "preprocess_cfg"}, "open_clip_config.json")
    preprocess_cfg = config_json.get("preprocess_cfg")
    if preprocess_cfg is not None and not isinstance(preprocess_cfg, Mapping):
        raise FormatError(f"open_clip_config.json's preprocess_cfg is a {type(preprocess_cfg).__name__}, not a mapping")
    return dict(config_json["model_cfg"]), None if preprocess_cfg is None else dict(preprocess_cfg)


def config_overrides(model_cfg: Mapping[str, Any], quick_gelu: bool | None,
                     preprocess_cfg: Mapping[str, Any] | None = None) -> list[str]:
    """Our config's keys for an OpenCLIP model config and its preprocess_cfg. `quick_gelu`: the activation the
    weights were trained with, which OpenCLIP's own ViT-B-32.json does not say for OpenAI's weights; None: not said,
    so model_cfg's quick_gelu decides, false where it has none (as OpenCLIP reads a config file)."""
    refuse_unknown(model_cfg, MODEL_KEYS, "model_cfg")
    in_file = model_cfg.get("quick_gelu")
    if quick_gelu is not None and in_file is not None and in_file != quick_gelu:
        raise FormatError(f"model_cfg says quick_gelu={str(in_file).lower()}; quick_gelu={str(quick_gelu).lower()} "
                          "contradicts it")
    activation = "quick_gelu" if (in_file if quick_gelu is None else quick_gelu) else "gelu"
    sigmoid = "init_logit_bias" in model_cfg
    try:
        vision, text = dict(model_cfg["vision_cfg"]), dict(model_cfg["text_cfg"])
        image = _timm_image(vision) if "timm_model_name" in vision else _openai_image(vision, activation)
        loss = ["loss.name=siglip", f"loss.init_bias={model_cfg['init_logit_bias']}"] if sigmoid else ["loss.name=clip"]
        return [
            *loss, f"model.embed_dim={model_cfg['embed_dim']}", f"model.image.image_size={vision['image_size']}",
            *image, *_pixels(preprocess_cfg, SIGLIP_PIXELS if sigmoid else OPENCLIP_PIXELS), *_text(text, activation),
        ]
    except KeyError as e:
        raise FormatError(f"model_cfg has no {e.args[0]}, which the architecture needs") from None


def _openai_image(vision: dict[str, Any], activation: str) -> list[str]:
    refuse_unknown(vision, VISION_KEYS, "model_cfg.vision_cfg")
    image_kwargs = {"patch_size": vision["patch_size"], "embed_dim": vision["width"], "depth": vision["layers"],
                    "num_heads": vision["width"] // vision.get("head_width", HEAD_WIDTH),
                    "mlp_ratio": vision.get("mlp_ratio", 4.0), "act_layer": activation}
    kwargs = "{" + ", ".join(f"{k}: {v}" for k, v in image_kwargs.items()) + "}"
    return [f"model.image.timm_name={CLIP_VIT}", f"model.image.kwargs={kwargs}"]


def _timm_image(vision: dict[str, Any]) -> list[str]:
    """OpenCLIP's TimmModel with timm_proj "none": timm's model built with num_classes=0 and global_pool=timm_pool,
    its pooled output the embedding, as our tower builds it with projection=false."""
    refuse_unknown(vision, TIMM_VISION_KEYS, "model_cfg.vision_cfg")
    pool, proj = vision.get("timm_pool", "avg"), vision.get("timm_proj", "linear")
    if proj != "none":
        raise FormatError(f"model_cfg.vision_cfg.timm_proj={proj!r}: this import takes timm trunks whose pooled "
                          "output is the embedding (timm_proj 'none', as SigLIP's); OpenCLIP builds the others with "
                          "timm's default pooling, then resets it")
    if pool in ("", "abs_attn", "rot_attn"):
        raise FormatError(f"model_cfg.vision_cfg.timm_pool={pool!r}: this import takes timm's own pooling (map, avg, "
                          "token, ...), not OpenCLIP's attention pools or none")
    return [f"model.image.timm_name={vision['timm_model_name']}", f"model.image.kwargs={{global_pool: {pool}}}",
            "model.image.projection=false"]


def _pixels(preprocess_cfg: Mapping[str, Any] | None, family: dict[str, Any]) -> list[str]:
    if preprocess_cfg is not None:
        refuse_unknown(preprocess_cfg, PREPROCESS_KEYS, "preprocess_cfg")
    pixels = family if preprocess_cfg is None else {**OPENCLIP_PIXELS, **preprocess_cfg}
    if pixels["interpolation"] not in INTERPOLATIONS:
        raise FormatError(f"preprocess_cfg.interpolation={pixels['interpolation']!r}: our eval transform "
                          "(data/decode.py square_pixels) resizes bicubic")
    if pixels["resize_mode"] not in RESIZE_MODES:
        raise FormatError(f"preprocess_cfg.resize_mode={pixels['resize_mode']!r}: our eval transform "
                          f"(data/decode.py square_pixels) has the counterparts of {', '.join(RESIZE_MODES)}")
    mean, std = (_three(pixels[key]) for key in ("mean", "std"))
    return [f"model.image.mean=[{mean}]", f"model.image.std=[{std}]",
            f"model.image.resize={RESIZE_MODES[pixels['resize_mode']]}"]


def _three(value: Any) -> str:
    """A per-channel statistic as OpenCLIP reads it (one number means all three channels)."""
    return ", ".join(map(str, value if isinstance(value, (list, tuple)) else (value,) * 3))


def _text(text: dict[str, Any], activation: str) -> list[str]:
    refuse_unknown(text, TEXT_KEYS, "model_cfg.text_cfg")
    pool_type = text.get("pool_type", "argmax")
    if pool_type not in TEXT_POOLS:
        raise FormatError(f"model_cfg.text_cfg.pool_type={pool_type!r}: this import pools as OpenCLIP's "
                          f"{' or '.join(TEXT_POOLS)}")
    rows, pad_id = _token_rows(text)
    if pool_type == "eos" and text.get("eos_id") in (None, pad_id):
        raise FormatError(f"model_cfg.text_cfg.pool_type='eos' with eos_id={text.get('eos_id')} and pad id {pad_id}: "
                          "our pool=eot takes the last token before the pads, the end token only where eos_id says "
                          "it and the pad is another token")
    norm = dict(text.get("norm_kwargs") or {})
    refuse_unknown(norm, {"eps"}, "model_cfg.text_cfg.norm_kwargs")
    causal = not text.get("no_causal_mask", False)
    return [
        f"model.text.context_length={text['context_length']}", f"model.text.width={text['width']}",
        f"model.text.depth={text['layers']}", f"model.text.heads={text['heads']}",
        f"model.text.mlp_ratio={text.get('mlp_ratio', 4.0)}", f"model.text.causal={str(causal).lower()}",
        # OpenCLIP's bidirectional text tower attends to the pads: its use_pad_mask is not a config key
        *([] if causal else ["model.text.mask_pad_keys=false"]),
        f"model.text.pool={TEXT_POOLS[pool_type]}", f"model.text.activation={activation}",
        f"model.text.norm_eps={norm.get('eps', 1e-5)}",
        f"model.text.projection_bias={str(bool(text.get('proj_bias', False))).lower()}", "model.text.key_bias=true",
        *rows,
    ]


def _token_rows(text: dict[str, Any]) -> tuple[list[str], int]:
    """The keys of the rows OpenCLIP's tokenizer for this model makes (its cleaning, start token and pad id), and
    the pad id."""
    tokenizer_kwargs = dict(text.get("tokenizer_kwargs") or {})
    refuse_unknown(tokenizer_kwargs, {"clean"}, "model_cfg.text_cfg.tokenizer_kwargs")
    name = text.get("hf_tokenizer_name")
    if name is None:  # OpenCLIP's SimpleTokenizer, clean "lower" by default
        clean, start_token, pad_id = tokenizer_kwargs.get("clean", "lower"), True, 0
    elif name in HF_TOKENIZER_PADS:  # OpenCLIP's HFTokenizer, clean "whitespace" by default
        clean, start_token, pad_id = tokenizer_kwargs.get("clean", "whitespace"), False, HF_TOKENIZER_PADS[name]
    else:
        raise FormatError(f"model_cfg.text_cfg.hf_tokenizer_name={name!r}: the rows of that tokenizer (start token, "
                          f"pad id) are not known here; known: {', '.join(HF_TOKENIZER_PADS)}")
    if clean not in CLEAN:
        raise FormatError(f"model_cfg.text_cfg.tokenizer_kwargs.clean={clean!r}: our tokenizer cleans as OpenCLIP's "
                          f"{' or '.join(CLEAN)}")
    return [f"model.text.clean={CLEAN[clean]}", f"model.text.start_token={str(start_token).lower()}",
            f"model.text.pad_id={pad_id}"], pad_id




TIMM_VISION = [Entry("visual.trunk.{name}", "image_tower.trunk.{name}")]  # timm's own names, as our trunk's
NATIVE_VISION = [
    Entry("visual.class_embedding", "image_tower.trunk.cls_token", CLASS_TOKEN),
    Entry("visual.positional_embedding", "image_tower.trunk.pos_embed", BATCHED),
    Entry("visual.conv1.weight", "image_tower.trunk.patch_embed.proj.weight"),
    Entry("visual.ln_pre.{param}", "image_tower.trunk.norm_pre.{param}"),
    Entry("visual.ln_post.{param}", "image_tower.trunk.norm.{param}"),
    Entry("visual.proj", "image_tower.projection.weight", TRANSPOSED),
    *block_entries("visual.transformer.resblocks", "image_tower.trunk.blocks", {
        "ln_1.{param}": "norm1.{param}", "attn.in_proj_{param}": "attn.qkv.{param}",
        "attn.out_proj.{param}": "attn.proj.{param}", "ln_2.{param}": "norm2.{param}",
        "mlp.c_fc.{param}": "mlp.fc1.{param}", "mlp.c_proj.{param}": "mlp.fc2.{param}"}),
]
TEXT_BLOCK = {"attn.in_proj_weight": "qkv.weight", "attn.in_proj_bias": "{qkv_bias}",
              "ln_1.{param}": "attn_norm.{param}", "attn.out_proj.{param}": "attn_out.{param}",
              "ln_2.{param}": "mlp_norm.{param}", "mlp.c_fc.{param}": "mlp.0.{param}",
              "mlp.c_proj.{param}": "mlp.2.{param}"}
# With a bias the projection is an nn.Linear, else a parameter P applied as x @ P.
TEXT_PROJECTIONS = {False: Entry("text_projection", "text_tower.projection.weight", TRANSPOSED),
                    True: Entry("text_projection.{param}", "text_tower.projection.{param}")}
LOSS = [Entry("logit_scale", "loss.logit_scale"), Entry("logit_bias", "loss.logit_bias")]


def _text_entries(prefix: str, projection_biases: Iterable[bool]) -> list[Entry]:
    """The text tower's entries under `prefix`: CLIP's are at the top level, CustomTextCLIP's (SigLIP's) under text."""
    return [*block_entries(f"{prefix}transformer.resblocks", "text_tower.blocks", TEXT_BLOCK),
            Entry(f"{prefix}token_embedding.weight", "text_tower.token_embedding.weight"),
            Entry(f"{prefix}positional_embedding", "text_tower.positional_embedding"),
            Entry(f"{prefix}ln_final.{{param}}", "text_tower.final_norm.{param}"),
            *(replace(TEXT_PROJECTIONS[bias], theirs=prefix + TEXT_PROJECTIONS[bias].theirs)
              for bias in projection_biases)]


RULES = import_rules([*TIMM_VISION, *NATIVE_VISION, *_text_entries("", (False, True)),
                      *_text_entries("text.", (False, True)), *LOSS])


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP's entries -> ours (ContrastiveModel with the config above)."""
    return mapped(state, RULES, "OpenCLIP", "an OpenAI-style CLIP ViT has visual.*, transformer.resblocks.*, "
                  "token_embedding, positional_embedding, ln_final, text_projection, logit_scale; a timm-trunk SigLIP "
                  "has visual.trunk.*, the same text entries under text.*, logit_scale and logit_bias", "our")


def export_config(cfg: Config, vocab_size: int, eos_id: int,
                  tokenizer_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """open_clip_config.json for our model: OpenCLIP's create_model builds the same model from it. `eos_id` is the
    rows' end token (eot pooling is OpenCLIP's eos). `tokenizer_cfg` is the tokenizer export's: the text_cfg keys
    that name OpenCLIP's tokenizer for the exported tokenizer files (hf_tokenizer_name, tokenizer_kwargs); None says
    nothing, and OpenCLIP tokenizes with its CLIP BPE."""
    loss, model, image = exported_loss(cfg), cfg.model, cfg.model.image
    unknown = set(tokenizer_cfg or {}) - TOKENIZER_KEYS
    if unknown:
        raise ValueError(f"tokenizer_cfg sets {', '.join(sorted(unknown))}; it takes "
                         f"{', '.join(sorted(TOKENIZER_KEYS))}")
    vision = _native_vision(model) if image.projection else _timm_vision(model)
    model_cfg = {
        "embed_dim": model.embed_dim, **({"quick_gelu": True} if model.text.activation == "quick_gelu" else {}),
        **({"custom_text": True, "init_logit_bias": cfg.loss["init_bias"]} if loss == "siglip" else {}),
        "vision_cfg": vision, "text_cfg": {**_export_text(model.text, vocab_size, eos_id), **(tokenizer_cfg or {})},
    }
    resize_mode = {ours: theirs for theirs, ours in RESIZE_MODES.items()}[image.resize]
    return {"model_cfg": model_cfg, "preprocess_cfg": {"mean": list(image.mean), "std": list(image.std),
                                                       "interpolation": "bicubic", "resize_mode": resize_mode}}


def _native_vision(model: ModelConfig) -> dict[str, Any]:
    """OpenCLIP's own ViT; its activation is the text tower's, as OpenCLIP's quick_gelu sets both."""
    shape = vit_shape(model, CLIP_VIT, "OpenCLIP's projected image tower")
    if shape.act_layer != model.text.activation:
        raise FormatError(f"the image tower's activation is {shape.act_layer} and model.text.activation="
                          f"{model.text.activation}: OpenCLIP's quick_gelu sets both towers' (GELU or QuickGELU)")
    return {"image_size": model.image.image_size, "layers": shape.depth, "width": shape.embed_dim,
            "head_width": shape.embed_dim // shape.num_heads, "patch_size": shape.patch_size,
            "mlp_ratio": shape.mlp_ratio}


def _timm_vision(model: ModelConfig) -> dict[str, Any]:
    """A timm trunk as OpenCLIP's TimmModel builds it for timm_proj "none": from its name and timm_pool alone
    (timm's default image size), its pooled output the embedding."""
    image = model.image
    with torch.device("meta"):
        ours = ImageTower(image, model.embed_dim).trunk
        pool = _pooling(ours)
        theirs = timm.create_model(image.timm_name, pretrained=False, num_classes=0, global_pool=pool)
    difference = first_difference(ours, theirs, "OpenCLIP's")
    if difference:
        raise FormatError(f"model.image.timm_name={image.timm_name} with model.image.projection=false: OpenCLIP "
                          f"builds that timm trunk from its name and timm_pool={pool!r} alone, at timm's image size, "
                          f"not as this model's (kwargs {dict(image.kwargs)}, image_size {image.image_size}): "
                          f"{difference}")
    return {"image_size": image.image_size, "timm_model_name": image.timm_name, "timm_model_pretrained": False,
            "timm_pool": pool, "timm_proj": "none"}


def _pooling(trunk: nn.Module) -> str:
    """The global_pool a timm model was built with: a ViT's setting, or the type of its (or its head's) pool."""
    for pool in (getattr(trunk, "global_pool", None), getattr(getattr(trunk, "head", None), "global_pool", None)):
        if pool is not None:
            return pool if isinstance(pool, str) else pool.pool_type
    return "avg"  # OpenCLIP's default timm_pool


def _export_text(text: TextTowerConfig, vocab_size: int, eos_id: int) -> dict[str, Any]:
    if text.pool not in POOL_TYPES:
        raise FormatError(f"model.text.pool={text.pool}: OpenCLIP's text pooling is first, last, argmax or eos "
                          "(ours: last, argmax, eot)")
    if not text.causal and text.mask_pad_keys:
        raise FormatError("model.text.mask_pad_keys=true with model.text.causal=false: OpenCLIP's bidirectional "
                          "text tower attends to the pads (TextTransformer's use_pad_mask is no text_cfg key)")
    if text.activation not in ("gelu", "quick_gelu"):
        raise FormatError(f"model.text.activation={text.activation}: OpenCLIP's text tower has GELU or QuickGELU "
                          "(quick_gelu); the tanh approximation needs act_kwargs, which the import does not read")
    return {"context_length": text.context_length, "vocab_size": vocab_size, "width": text.width,
            "heads": text.heads, "layers": text.depth, "mlp_ratio": text.mlp_ratio, "no_causal_mask": not text.causal,
            "proj_bias": text.projection_bias, "pool_type": POOL_TYPES[text.pool],
            **({"eos_id": eos_id} if text.pool == "eot" else {}), "norm_kwargs": {"eps": text.norm_eps}}


def export_state_dict(state: Mapping[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Our model's entries (export_config's model) -> OpenCLIP's."""
    custom_text = exported_loss(cfg) == "siglip"
    entries = [*(NATIVE_VISION if cfg.model.image.projection else TIMM_VISION),
               *_text_entries("text." if custom_text else "", (cfg.model.text.projection_bias,)), *LOSS]
    return mapped(as_peers_compute(state, cfg), export_rules(entries), "this model", EXPORT_HINT, "OpenCLIP's")
