"""OpenCLIP's format for its OpenAI-style CLIP ViTs (ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, ...) and
its timm-trunk SigLIP models (ViT-B-16-SigLIP): its model config as our config keys, and its state dict as ours.

    model_cfg, preprocess_cfg = read_model_config(json.load(open("open_clip_config.json")))
    overrides = config_overrides(model_cfg, quick_gelu=None, preprocess_cfg=preprocess_cfg)
    model = build_model(cfg.model, cfg.loss, vocab_size, pad_id)   # cfg = load_config(None, overrides)
    model.load_state_dict(convert_state_dict(state_dict))

CLIP: the image tower is timm's CLIP ViT (a LayerNorm before the blocks, OpenAI's ln_pre); the text tower is causal,
pooled at the highest token id as OpenCLIP pools CLIP (its end token is the vocabulary's last id; OpenCLIP pads
with 0), QuickGELU in both towers where the weights were trained with it.
SigLIP: the image tower is the timm model OpenCLIP names, with its pooling (the MAP head) as the embedding; the text
tower is bidirectional, attends to its pads (OpenCLIP builds it without a pad mask), pools the last position, and
has exact GELU (nn.GELU: OpenCLIP's default; only SigLIP 2's configs ask for the tanh approximation) or QuickGELU
with quick_gelu, which OpenCLIP applies to the text tower only: timm trunks keep their own activation.
The text attention's key bias is kept (model.text.key_bias) so that an export gives it back, though it changes no
output (it adds the same amount to every logit of a query, which softmax ignores). Anything this mapping does not know is an error naming the key or tensor, never a
silent skip.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Mapping

import torch

from contrastive.config import OPENAI_MEAN, OPENAI_STD
from contrastive.errors import FormatError
from contrastive.state_mapping import map_state_dict, refuse_unknown, rename, transpose

HEAD_WIDTH = 64  # OpenCLIP's CLIPVisionCfg.head_width default: heads = width / 64
# OpenCLIP's model_cfg keys this mapping expresses; any other is refused (it would change the model).
# custom_text only says the text tower's tensors are under text.*; init_logit_bias makes the loss SigLIP's.
MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_bias"}
VISION_KEYS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
# timm_model_pretrained only says how OpenCLIP initialises the trunk, before the state dict replaces it.
TIMM_VISION_KEYS = {"image_size", "timm_model_name", "timm_model_pretrained", "timm_pool", "timm_proj"}
TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "no_causal_mask", "proj_bias",
             "pool_type", "norm_kwargs", "hf_tokenizer_name", "tokenizer_kwargs"}
TEXT_POOLS = {"argmax": "argmax", "last": "last"}  # OpenCLIP's text pool_type -> ours
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
    return ["model.image.timm_name=vit_base_patch16_clip_224", f"model.image.kwargs={kwargs}"]


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
        *_token_rows(text),
    ]


def _token_rows(text: dict[str, Any]) -> list[str]:
    """The keys of the rows OpenCLIP's tokenizer for this model makes: its cleaning, start token and pad id."""
    tokenizer_kwargs = dict(text.get("tokenizer_kwargs") or {})
    refuse_unknown(tokenizer_kwargs, {"clean"}, "model_cfg.text_cfg.tokenizer_kwargs")
    name = text.get("hf_tokenizer_name")
    if name is None:  # OpenCLIP's SimpleTokenizer, clean "lower" by default
        clean, rows = tokenizer_kwargs.get("clean", "lower"), ["model.text.start_token=true", "model.text.pad_id=0"]
    elif name in HF_TOKENIZER_PADS:  # OpenCLIP's HFTokenizer, clean "whitespace" by default
        clean = tokenizer_kwargs.get("clean", "whitespace")
        rows = ["model.text.start_token=false", f"model.text.pad_id={HF_TOKENIZER_PADS[name]}"]
    else:
        raise FormatError(f"model_cfg.text_cfg.hf_tokenizer_name={name!r}: the rows of that tokenizer (start token, "
                          f"pad id) are not known here; known: {', '.join(HF_TOKENIZER_PADS)}")
    if clean not in CLEAN:
        raise FormatError(f"model_cfg.text_cfg.tokenizer_kwargs.clean={clean!r}: our tokenizer cleans as OpenCLIP's "
                          f"{' or '.join(CLEAN)}")
    return [f"model.text.clean={CLEAN[clean]}", *rows]


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP's entries -> ours (ContrastiveModel with the config above)."""
    return map_state_dict(state, RULES, "OpenCLIP", hint="an OpenAI-style CLIP ViT has visual.*, "
                          "transformer.resblocks.*, token_embedding, positional_embedding, ln_final, text_projection, "
                          "logit_scale; a timm-trunk SigLIP has visual.trunk.*, the same text entries under text.*, "
                          "logit_scale and logit_bias")


def _text_attention(value: torch.Tensor, block: str, kind: str) -> dict[str, torch.Tensor]:
    prefix = f"text_tower.blocks.{block}"
    if kind == "weight":
        return {f"{prefix}.qkv.weight": value}
    q, k, v = value.chunk(3)
    return {f"{prefix}.q_bias": q, f"{prefix}.k_bias": k, f"{prefix}.v_bias": v}


VISION_BLOCK = {"ln_1": "norm1", "attn.in_proj": "attn.qkv", "attn.out_proj": "attn.proj", "ln_2": "norm2",
                "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
TEXT_BLOCK = {"ln_1": "attn_norm", "attn.out_proj": "attn_out", "ln_2": "mlp_norm", "mlp.c_fc": "mlp.0",
              "mlp.c_proj": "mlp.2"}
TEXT = r"(?:text\.)?"  # CLIP's text entries are at the top level, CustomTextCLIP's (SigLIP's) under text.
RULES = [
    (re.compile(r"visual\.trunk\.(.+)"), rename("image_tower.trunk.{0}")),  # timm's own names, as our trunk's
    (re.compile(r"visual\.class_embedding"), rename("image_tower.trunk.cls_token", lambda v: v.view(1, 1, -1))),
    (re.compile(r"visual\.positional_embedding"), rename("image_tower.trunk.pos_embed", lambda v: v.unsqueeze(0))),
    (re.compile(r"visual\.conv1\.weight"), rename("image_tower.trunk.patch_embed.proj.weight")),
    (re.compile(r"visual\.ln_pre\.(weight|bias)"), rename("image_tower.trunk.norm_pre.{0}")),
    (re.compile(r"visual\.ln_post\.(weight|bias)"), rename("image_tower.trunk.norm.{0}")),
    (re.compile(r"visual\.proj"), rename("image_tower.projection.weight", transpose)),
    *((re.compile(rf"visual\.transformer\.resblocks\.(\d+)\.{re.escape(ours)}[._](weight|bias)"),
       rename(f"image_tower.trunk.blocks.{{0}}.{theirs}.{{1}}"))
      for ours, theirs in VISION_BLOCK.items()),
    (re.compile(rf"{TEXT}transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)"), _text_attention),
    *((re.compile(rf"{TEXT}transformer\.resblocks\.(\d+)\.{re.escape(ours)}\.(weight|bias)"),
       rename(f"text_tower.blocks.{{0}}.{theirs}.{{1}}"))
      for ours, theirs in TEXT_BLOCK.items()),
    (re.compile(rf"{TEXT}token_embedding\.weight"), rename("text_tower.token_embedding.weight")),
    (re.compile(rf"{TEXT}positional_embedding"), rename("text_tower.positional_embedding")),
    (re.compile(rf"{TEXT}ln_final\.(weight|bias)"), rename("text_tower.final_norm.{0}")),
    (re.compile(rf"{TEXT}text_projection"), rename("text_tower.projection.weight", transpose)),  # x @ P
    (re.compile(rf"{TEXT}text_projection\.(weight|bias)"), rename("text_tower.projection.{0}")),  # nn.Linear
    (re.compile(r"logit_scale"), rename("loss.logit_scale")),
    (re.compile(r"logit_bias"), rename("loss.logit_bias")),
]
