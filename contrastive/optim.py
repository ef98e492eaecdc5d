"""AdamW with OpenCLIP's weight-decay split: no decay on gains, biases, norms, the loss's temperature and bias
(every parameter with ndim < 2), nor on position embeddings and class/register tokens (the model's
`no_weight_decay()` names).

torch's AdamW decays each step by lr_t x weight_decay (`optim.weight_decay_scaling=lr`, OpenCLIP's and the CLIP
paper's convention). big_vision (SigLIP) decays by weight_decay x s_t, s_t = lr_t / lr the schedule's factor
(peak 1), independent of the base lr (`schedule`): the same AdamW with weight_decay / lr as its coefficient.
"""
import torch
from torch import nn

from contrastive.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    exempt = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name in exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def torch_weight_decay(cfg: OptimConfig) -> float:
    """The coefficient torch's AdamW multiplies by lr_t."""
    if cfg.weight_decay_scaling == "schedule" and cfg.weight_decay:
        return cfg.weight_decay / cfg.lr
    return cfg.weight_decay


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # Fused on CPU too: torch's CPU default is a loop over parameters, 2.3x (ViT-B/32) to 15x (demo model)
    # slower per update on 2 cores (docs/benchmarks.md, "Side by side with OpenCLIP").
    return torch.optim.AdamW(param_groups(model, torch_weight_decay(cfg)), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, fused=True)
