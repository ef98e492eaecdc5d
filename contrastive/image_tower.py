"""The image tower: a timm VisionTransformer on uint8 images, normalised on the device.

Two outputs, chosen by what the loss scores:
- "embedding": the ViT's pooled output (token | avg | map) -> linear projection (no bias) -> L2-normalised [B, D].
- "mixture_tokens": the K learnable prefix tokens of the ViT after its final norm, [B, K, width], for Llip.
  The ViT is built with K register tokens and no class token, so these are timm's prefix tokens, and no
  pooling head or projection is built (the loss owns the projections).
"""
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from torch import nn

from contrastive.config import ImageTowerConfig

ImageOutput = Literal["embedding", "mixture_tokens"]

# OpenAI CLIP's pixel statistics (0-1 scale), the usual choice for training from scratch on web data.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageTower(nn.Module):
    def __init__(self, cfg: ImageTowerConfig, embed_dim: int, output: ImageOutput = "embedding"):
        super().__init__()
        self.image_size = cfg.image_size
        self.output = output
        shape = dict(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.width, depth=cfg.depth,
                     num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, patch_drop_rate=cfg.patch_drop_rate)
        if output == "mixture_tokens":
            # global_pool="" keeps the final norm inside forward_features and builds no pooling head.
            shape.update(reg_tokens=cfg.mixture_tokens, class_token=False, global_pool="")
        else:
            shape.update(global_pool=cfg.global_pool)
        try:
            self.vit = timm.create_model(cfg.timm_name, pretrained=False, num_classes=0, **shape)
        except (AssertionError, ValueError, TypeError, RuntimeError) as e:
            given = ", ".join(f"{k}={v!r}" for k, v in shape.items())
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"timm cannot build {cfg.timm_name}({given}): {detail}") from None
        if output == "mixture_tokens" and self.vit.num_prefix_tokens != cfg.mixture_tokens:
            raise RuntimeError(f"timm model {cfg.timm_name} has {self.vit.num_prefix_tokens} prefix tokens, "
                               f"expected model.image.mixture_tokens={cfg.mixture_tokens}")
        self.projection = nn.Linear(cfg.width, embed_dim, bias=False) if output == "embedding" else None
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, std=cfg.width ** -0.5)
        self.register_buffer("mean", 255 * torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255 * torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> [B, D] (embedding) or [B, K, width] (mixture_tokens)."""
        expected = (3, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"image tower expects uint8 images [B, {', '.join(map(str, expected))}], "
                             f"got {images.dtype} {list(images.shape)}")
        x = ((images.float() - self.mean) / self.std).to(self._compute_dtype(images.device))
        if self.output == "mixture_tokens":
            return self.vit.forward_features(x)[:, : self.vit.num_prefix_tokens]
        return F.normalize(self.projection(self.vit(x)), dim=-1)

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.vit.patch_embed.proj.weight.dtype

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.vit.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Position embeddings and class/register tokens (timm's list), as parameter names of this module."""
        return {f"vit.{name}" for name in self.vit.no_weight_decay()}
