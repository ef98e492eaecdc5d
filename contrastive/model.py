"""The contrastive model: image tower, text tower and the loss that scores them (the loss owns temperature/bias).

The loss class's `tower_outputs` says what the towers hand it, and the model builds only those heads, so every
parameter gets a gradient from every step (DDP never sees unused parameters):
- ("embedding", "embedding"): both towers project and L2-normalise, image [B, D] and text [B, D].
- ("mixture_tokens", "pooled_state"), Llip's: the image tower hands out its K mixture tokens [B, K, width_image]
  and the text tower its pooled state [B, width_text]; the loss owns the cross-attention and the projections
  into embed_dim, and takes the widths (losses.MODEL_SUPPLIED) from the built towers.
The model satisfies the evaluators' protocol (DESIGN.md): encode_image, encode_text, logits, combine_templates,
and the optional pair_embeddings.
"""
import contextlib
from typing import Any, Iterator

import torch
from torch import nn

import losses
from contrastive.config import ConfigError, ModelConfig
from contrastive.image_tower import ImageTower
from contrastive.text_tower import TextTower


class ContrastiveModel(nn.Module):
    def __init__(self, image_tower: ImageTower, text_tower: TextTower, loss: nn.Module):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.loss = loss
        self.image_size = image_tower.image_size
        self.image_frozen = self.text_frozen = False

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [B, 3, H, W] and token ids [B, L] -> (image repr, text repr) as the loss consumes them."""
        return self.encode_image(images), self.encode_text(tokens)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad() if self.image_frozen else contextlib.nullcontext():
            return self.image_tower(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad() if self.text_frozen else contextlib.nullcontext():
            return self.text_tower(tokens)

    def freeze(self, image: bool, text: bool) -> None:
        """Lock towers (LiT): no gradient (so no backward through them, and the optimizer leaves them out), and eval
        mode whatever mode the model is set to (no dropout, no patch dropout)."""
        self.image_frozen, self.text_frozen = image, text
        for tower, frozen in ((self.image_tower, image), (self.text_tower, text)):
            tower.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ContrastiveModel":
        super().train(mode)
        for tower, frozen in ((self.image_tower, self.image_frozen), (self.text_tower, self.text_frozen)):
            if frozen:
                tower.eval()
        return self

    def logits(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> torch.Tensor:
        return self.loss.logits(image_repr, text_repr)

    def combine_templates(self, text_reprs: torch.Tensor) -> torch.Tensor:
        return self.loss.combine_templates(text_reprs)

    def pair_embeddings(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss.pair_embeddings(image_repr, text_repr)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.image_tower.set_grad_checkpointing(enable)
        self.text_tower.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters with ndim >= 2 that still take no weight decay: position embeddings, class tokens."""
        return ({f"image_tower.{n}" for n in self.image_tower.no_weight_decay()}
                | {f"text_tower.{n}" for n in self.text_tower.no_weight_decay()})


def build_model(model_cfg: ModelConfig, loss_cfg: dict[str, Any], vocab_size: int, pad_id: int) -> ContrastiveModel:
    """`loss_cfg` is the config's resolved `loss` section. What a constructor refuses is a config error naming its
    section; built under `torch.device("meta")` this is the pre-flight's model check (contrastive/preflight.py),
    at no cost for any width."""
    arguments = dict(loss_cfg)
    name = arguments.pop("name")
    image_output, text_output = losses.get(name).tower_outputs
    with _refusals_name("model.image"):
        image_tower = ImageTower(model_cfg.image, model_cfg.embed_dim, output=image_output)
    with _refusals_name("model.text"):
        text_tower = TextTower(model_cfg.text, vocab_size, pad_id, model_cfg.embed_dim, output=text_output)
    widths = dict(image_dim=image_tower.width, text_dim=model_cfg.text.width, embed_dim=model_cfg.embed_dim)
    with _refusals_name("loss"):
        loss = losses.build(name, **arguments, **{key: widths[key] for key in losses.supplied(name)})
    model = ContrastiveModel(image_tower, text_tower, loss)
    model.freeze(image=model_cfg.image.frozen, text=model_cfg.text.frozen)
    return model


@contextlib.contextmanager
def _refusals_name(section: str) -> Iterator[None]:
    """timm asserts, torch raises RuntimeError for impossible shapes, our constructors raise ValueError."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, AssertionError, OverflowError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"config error: {section}: {detail}") from None
