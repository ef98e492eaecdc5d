"""OpenCLIP's format for the OpenAI-style CLIP ViTs (ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, ...):
its model config as our config keys, and its state dict as ours.

    overrides = config_overrides(model_cfg, quick_gelu=True)     # model_cfg: open_clip_config.json's "model_cfg"
    model = build_model(cfg.model, cfg.loss, vocab_size=49408, pad_id=0)   # cfg = load_config(None, overrides)
    model.load_state_dict(convert_state_dict(state_dict))

The image tower is timm's CLIP ViT (a LayerNorm before the blocks, OpenAI's ln_pre); the text tower is causal,
pooled at the highest token id as OpenCLIP pools CLIP (its end token is the vocabulary's last id; OpenCLIP pads
with 0), QuickGELU in both towers where the weights were trained with it. The attention's key bias is dropped:
it adds the same amount to every logit of a query, which softmax ignores, so the output is unchanged.
Anything this mapping does not know is an error naming the tensor, never a silent skip.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from contrastive.state_mapping import map_state_dict, refuse_unknown, rename, transpose

HEAD_WIDTH = 64  # OpenCLIP's CLIPVisionCfg.head_width default: heads = width / 64
# OpenCLIP's model_cfg keys this mapping expresses; any other is refused (it would change the model).
VISION_KEYS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}


def config_overrides(model_cfg: Mapping[str, Any], quick_gelu: bool) -> list[str]:
    """Our config's keys for an OpenCLIP model config (`quick_gelu`: the activation its weights were trained with,
    which OpenCLIP's own ViT-B-32.json does not say for OpenAI's weights)."""
    refuse_unknown(model_cfg, MODEL_KEYS, "model_cfg")
    vision, text = dict(model_cfg["vision_cfg"]), dict(model_cfg["text_cfg"])
    refuse_unknown(vision, VISION_KEYS, "model_cfg.vision_cfg")
    refuse_unknown(text, TEXT_KEYS, "model_cfg.text_cfg")
    activation = "quick_gelu" if quick_gelu else "gelu"
    image_kwargs = {"patch_size": vision["patch_size"], "embed_dim": vision["width"], "depth": vision["layers"],
                    "num_heads": vision["width"] // vision.get("head_width", HEAD_WIDTH),
                    "mlp_ratio": vision.get("mlp_ratio", 4.0), "act_layer": activation}
    kwargs = "{" + ", ".join(f"{k}: {v}" for k, v in image_kwargs.items()) + "}"
    return [
        "loss.name=clip", f"model.embed_dim={model_cfg['embed_dim']}",
        "model.image.timm_name=vit_base_patch16_clip_224", f"model.image.image_size={vision['image_size']}",
        f"model.image.kwargs={kwargs}", "model.image.resize=crop",
        f"model.text.context_length={text['context_length']}", f"model.text.width={text['width']}",
        f"model.text.depth={text['layers']}", f"model.text.heads={text['heads']}",
        f"model.text.mlp_ratio={text.get('mlp_ratio', 4.0)}", "model.text.causal=true", "model.text.pool=argmax",
        f"model.text.activation={activation}", "model.text.norm_eps=1e-5", "model.text.projection_bias=false",
    ]


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP's entries -> ours (ContrastiveModel with the config above)."""
    return map_state_dict(state, RULES, "OpenCLIP", hint="an OpenAI-style CLIP ViT has visual.*, "
                          "transformer.resblocks.*, token_embedding, positional_embedding, ln_final, text_projection, "
                          "logit_scale")


def _text_attention(value: torch.Tensor, block: str, kind: str) -> dict[str, torch.Tensor]:
    prefix = f"text_tower.blocks.{block}"
    if kind == "weight":
        return {f"{prefix}.qkv.weight": value}
    q, _, v = value.chunk(3)  # the key bias is dropped: softmax ignores it
    return {f"{prefix}.q_bias": q, f"{prefix}.v_bias": v}


VISION_BLOCK = {"ln_1": "norm1", "attn.in_proj": "attn.qkv", "attn.out_proj": "attn.proj", "ln_2": "norm2",
                "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
TEXT_BLOCK = {"ln_1": "attn_norm", "attn.out_proj": "attn_out", "ln_2": "mlp_norm", "mlp.c_fc": "mlp.0",
              "mlp.c_proj": "mlp.2"}
RULES = [
    (re.compile(r"visual\.class_embedding"), rename("image_tower.trunk.cls_token", lambda v: v.view(1, 1, -1))),
    (re.compile(r"visual\.positional_embedding"), rename("image_tower.trunk.pos_embed", lambda v: v.unsqueeze(0))),
    (re.compile(r"visual\.conv1\.weight"), rename("image_tower.trunk.patch_embed.proj.weight")),
    (re.compile(r"visual\.ln_pre\.(weight|bias)"), rename("image_tower.trunk.norm_pre.{0}")),
    (re.compile(r"visual\.ln_post\.(weight|bias)"), rename("image_tower.trunk.norm.{0}")),
    (re.compile(r"visual\.proj"), rename("image_tower.projection.weight", transpose)),
    *((re.compile(rf"visual\.transformer\.resblocks\.(\d+)\.{re.escape(ours)}[._](weight|bias)"),
       rename(f"image_tower.trunk.blocks.{{0}}.{theirs}.{{1}}"))
      for ours, theirs in VISION_BLOCK.items()),
    (re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)"), _text_attention),
    *((re.compile(rf"transformer\.resblocks\.(\d+)\.{re.escape(ours)}\.(weight|bias)"),
       rename(f"text_tower.blocks.{{0}}.{theirs}.{{1}}"))
      for ours, theirs in TEXT_BLOCK.items()),
    (re.compile(r"token_embedding\.weight"), rename("text_tower.token_embedding.weight")),
    (re.compile(r"positional_embedding"), rename("text_tower.positional_embedding")),
    (re.compile(r"ln_final\.(weight|bias)"), rename("text_tower.final_norm.{0}")),
    (re.compile(r"text_projection"), rename("text_tower.projection.weight", transpose)),
    (re.compile(r"logit_scale"), rename("loss.logit_scale")),
]
