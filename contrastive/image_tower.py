"""The image tower: any timm model on uint8 images, normalised on the device (model.image.mean and std).

    model.image.timm_name: convnext_tiny            # the architecture, as timm registers it
    model.image.kwargs: {drop_path_rate: 0.1}        # timm.create_model's keyword arguments over its defaults

Two outputs, chosen by what the loss scores:
- "embedding": the model's pooled output (timm's `num_classes=0` forward, [B, head_hidden_size]) -> linear
  projection (no bias; none with `projection: false`, as SigLIP's attention-pooled ViTs) -> L2-normalised [B, D].
- "mixture_tokens": the K learnable prefix tokens of a ViT after its final norm, [B, K, width], for Llip.
  The ViT is built with K register tokens and no class token, so these are timm's prefix tokens, and no
  pooling head or projection is built (the loss owns the projections). Other towers have no such tokens.
"""
from __future__ import annotations

import re
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from timm.models import VisionTransformer
from torch import nn

from contrastive.config import ImageTowerConfig

ImageOutput = Literal["embedding", "mixture_tokens"]

# timm.create_model arguments the tower sets itself, and the config key that says them instead.
OWN_ARGUMENTS = {"img_size": "model.image.image_size", "num_classes": "the embedding head (model.embed_dim)",
                 "pretrained": "no flag: weights are never downloaded at run time"}
MIXTURE_ARGUMENTS = ("reg_tokens", "class_token", "global_pool")
FINAL_NORM = (99999,)  # the ordinal timm's group matchers give the final norm, grouped after the last block


class ImageTower(nn.Module):
    def __init__(self, cfg: ImageTowerConfig, embed_dim: int, output: ImageOutput = "embedding"):
        super().__init__()
        if output not in ("embedding", "mixture_tokens"):
            raise ValueError(f"the image tower outputs an embedding or mixture tokens, not {output!r}")
        self.image_size = cfg.image_size
        self.output = output
        kwargs = dict(cfg.kwargs)
        for key, instead in OWN_ARGUMENTS.items():
            if key in kwargs:
                raise ValueError(f"kwargs.{key} is set by the tower ({instead})")
        if output == "mixture_tokens":
            if set(MIXTURE_ARGUMENTS) & kwargs.keys():
                raise ValueError(f"kwargs {', '.join(sorted(set(MIXTURE_ARGUMENTS) & kwargs.keys()))}: the mixture "
                                 f"tokens set them (model.image.mixture_tokens={cfg.mixture_tokens})")
            # global_pool="" keeps the final norm inside forward_features and builds no pooling head.
            kwargs.update(reg_tokens=cfg.mixture_tokens, class_token=False, global_pool="")
        self.trunk = _create(cfg.timm_name, cfg.image_size, kwargs)
        if output == "mixture_tokens" and not isinstance(self.trunk, VisionTransformer):
            raise ValueError(f"mixture tokens are register tokens of a timm VisionTransformer; {cfg.timm_name} is a "
                             f"{type(self.trunk).__name__}")
        self.width = getattr(self.trunk, "head_hidden_size", self.trunk.num_features)  # of what forward pools
        self.projection: nn.Module | None = None
        if output == "embedding" and cfg.projection:
            self.projection = nn.Linear(self.width, embed_dim, bias=False)
            nn.init.normal_(self.projection.weight, std=self.width ** -0.5)
        elif output == "embedding":
            if self.width != embed_dim:
                raise ValueError(f"projection=false makes the pooled output ({self.width} wide) the embedding, but "
                                 f"model.embed_dim={embed_dim}")
            self.projection = nn.Identity()
        self.register_buffer("mean", 255 * torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255 * torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> [B, D] (embedding) or [B, K, width] (mixture_tokens)."""
        expected = (3, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"image tower expects uint8 images [B, {', '.join(map(str, expected))}], "
                             f"got {images.dtype} {list(images.shape)}")
        x = ((images.float() - self.mean) / self.std).to(self._compute_dtype(images.device))
        if self.output == "mixture_tokens":
            return self.trunk.forward_features(x)[:, : self.trunk.num_prefix_tokens]
        return F.normalize(self.projection(self.trunk(x)), dim=-1)

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return next(p.dtype for p in self.trunk.parameters() if p.is_floating_point())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Position embeddings and class/register tokens (timm's list, where the model has one), as parameter
        names of this module."""
        names = self.trunk.no_weight_decay() if hasattr(self.trunk, "no_weight_decay") else set()
        return {f"trunk.{name}" for name in names}

    def repeated_blocks(self) -> list[nn.Module]:
        """The units FSDP shards one at a time: the modules timm's `group_matcher` names as the model's blocks
        (ViT and EVA blocks; each block and downsample layer of ConvNeXt, FastViT, Swin stages; ResNet's
        bottlenecks), in order. A model without a group_matcher has none: it is sharded whole."""
        if not hasattr(self.trunk, "group_matcher"):
            return []
        patterns = self.trunk.group_matcher(coarse=False)["blocks"]
        patterns = [(patterns, None)] if isinstance(patterns, str) else patterns
        block_patterns = [re.compile(regex) for regex, ordinal in patterns if ordinal != FINAL_NORM]
        return [module for name, module in self.trunk.named_modules()
                if any((match := p.match(name)) and match.group(0) == name for p in block_patterns)
                and any(True for _ in module.parameters())]  # a stage's Identity downsample has nothing to shard


def _create(name: str, image_size: int, kwargs: dict[str, Any]) -> nn.Module:
    """timm's model, given the input resolution where it takes one (ViTs do, convolutional models do not)."""
    try:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size, **kwargs)
        except TypeError as e:
            if "'img_size'" not in str(e):
                raise
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except (AssertionError, ValueError, TypeError, RuntimeError) as e:
        if "reg_tokens" in str(e) and "reg_tokens" in kwargs:
            raise ValueError(f"mixture tokens are register tokens of a timm VisionTransformer; {name} has "
                             "none") from None
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"timm cannot build {name}({given}): {detail}") from None
