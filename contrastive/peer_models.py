"""What the peers' models are, in our terms, for the exports (contrastive/openclip_format.py, hf_format.py): the
losses they score with, our tensors as they compute with them, and the timm ViT layouts their image towers are,
checked module by module against ours (so that a model the peer cannot build is refused from its config, naming the
first difference).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from difflib import SequenceMatcher
from typing import Any, Mapping

import torch
from timm.layers import DropPath, Mlp, PatchDropout
from timm.layers.activations import GELU, GELUTanh, QuickGELU
from timm.models import VisionTransformer
from torch import nn

import losses
from contrastive.config import Config, ModelConfig
from contrastive.errors import FormatError
from contrastive.image_tower import ImageTower

# The timm models the imports build for a peer's ViT, in its shape (their kwargs): OpenAI's CLIP layout, SigLIP's.
CLIP_VIT, SIGLIP_VIT = "vit_base_patch16_clip_224", "vit_base_patch16_siglip_224"
EXPORT_HINT = "the export maps the tensors of the towers and loss its config describes"
EXPORTED_LOSSES = ("clip", "siglip")


def exported_loss(cfg: Config) -> str:
    """clip or siglip: the peers' models score embeddings with one or the other."""
    name = cfg.loss["name"]
    if losses.get(name).tower_outputs != ("embedding", "embedding"):
        raise FormatError(f"loss {name} scores the image tower's mixture tokens (Llip's): neither OpenCLIP nor "
                          "transformers has a model for them")
    if name not in EXPORTED_LOSSES:
        raise FormatError(f"loss {name}: OpenCLIP's and transformers' models score as loss clip or siglip")
    return name


def as_peers_compute(state: Mapping[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Our tensors as the peers compute with them: the logit scale at most what our loss clamps it to (the peers'
    forward does not clamp), and a zero key bias in each text block without one (their attention has one)."""
    out = dict(state)
    loss = losses.build(cfg.loss["name"], **{k: v for k, v in cfg.loss.items() if k != "name"})
    out["loss.logit_scale"] = state["loss.logit_scale"].clamp(max=math.log(loss.objective.max_scale))
    for block in range(cfg.model.text.depth):
        key, query = f"text_tower.blocks.{block}.k_bias", state[f"text_tower.blocks.{block}.q_bias"]
        out.setdefault(key, torch.zeros_like(query))
    return out


def mlp_ratio(hidden: int, width: int) -> float:
    """hidden / width, nudged up where int(width * ratio) (how timm, OpenCLIP and our text tower size the MLP)
    would round it down a unit."""
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else math.nextafter(ratio, math.inf)


@dataclass(frozen=True)
class ViTShape:
    """A timm ViT's shape as timm.create_model's kwargs, and its LayerNorms' epsilon."""
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    act_layer: str
    norm_eps: float

    def kwargs(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "norm_eps"}


# What each ViT layout a peer has is, apart from the shape.
LAYOUTS = {CLIP_VIT: "a class token, a LayerNorm before the blocks, the class token pooled",
           SIGLIP_VIT: "no class token, pooled with a MAP head"}


def vit_shape(model: ModelConfig, layout: str, tower: str) -> ViTShape:
    """The shape of our image tower's ViT, which must be timm's `layout` model (CLIP_VIT or SIGLIP_VIT) in that
    shape, as the peer's image tower (`tower`, for messages) is: anything else is a FormatError naming the first
    difference."""
    image = model.image
    with torch.device("meta"):
        trunk = ImageTower(image, model.embed_dim).trunk
        if not isinstance(trunk, VisionTransformer) or not isinstance(trunk.blocks[0].mlp, Mlp):
            raise FormatError(f"model.image.timm_name={image.timm_name}: {tower} is a ViT only (timm's "
                              "VisionTransformer with Mlp blocks)")
        block = trunk.blocks[0]
        activation = _activation(block.mlp.act)
        if activation is None:
            raise FormatError(f"model.image.timm_name={image.timm_name}: its activation {block.mlp.act} is none of "
                              "GELU, tanh GELU, QuickGELU")
        shape = ViTShape(trunk.patch_embed.patch_size[0], trunk.embed_dim, len(trunk.blocks), block.attn.num_heads,
                         mlp_ratio(block.mlp.fc1.out_features, trunk.embed_dim), activation, trunk.norm.eps)
        reference = ImageTower(replace(image, timm_name=layout, kwargs=shape.kwargs()), model.embed_dim).trunk
    difference = first_difference(trunk, reference, f"timm's {layout}")
    if difference:
        raise FormatError(f"{tower} is timm's {layout} in some shape ({LAYOUTS[layout]}); this model's "
                          f"(model.image.timm_name={image.timm_name}) is not: {difference}")
    return shape


TIMM_ACTIVATIONS = {GELU: "gelu", GELUTanh: "gelu_tanh", QuickGELU: "quick_gelu"}
NO_OPS_IN_EVAL = (nn.Identity, nn.Dropout, DropPath, PatchDropout)
VIT_SETTINGS = ("global_pool", "num_prefix_tokens", "no_embed_class", "pool_include_prefix")


def _activation(module: nn.Module) -> str | None:
    """Our (and timm's) name for the function an activation module computes."""
    if isinstance(module, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_tanh"}[module.approximate]
    return TIMM_ACTIVATIONS.get(type(module))


def _layout(model: nn.Module) -> list[str]:
    """What a timm model computes in eval, a line each: its pooling settings, its tensors' shapes, each module's kind
    and settings (an activation as its function, dropout as nothing)."""
    settings = [f"{key}={getattr(model, key)!r}" for key in VIT_SETTINGS if hasattr(model, key)]
    tensors = [f"{name} {list(value.shape)}" for name, value in model.state_dict().items()]
    kinds = [f"{name or 'the model'}: " + ("nothing" if isinstance(module, NO_OPS_IN_EVAL) else
                                           _activation(module) or f"{type(module).__name__}({module.extra_repr()})")
             for name, module in model.named_modules()]
    return settings + tensors + kinds


def first_difference(ours: nn.Module, theirs: nn.Module, whose: str) -> str | None:
    """None where two timm models compute the same in eval (for the same tensors), else the first difference."""
    mine, other = _layout(ours), _layout(theirs)
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, mine, other, autojunk=False).get_opcodes():
        if tag != "equal":
            return (f"it has {mine[i1] if i1 < i2 else 'nothing'} where {whose} has "
                    f"{other[j1] if j1 < j2 else 'nothing'}")
    return None
