"""Obviously correct full-batch losses, written from the formulas in docs/losses.md with loops where
that makes them easier to check, evaluated in float64 on a copy of a loss module's parameters."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

import losses
from tests.losses.compare import Result


def dot_scores(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return image @ text.T


def llip_scores(similarity: torch.nn.Module, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Pair by pair and head by head: text j's query attends over image i's K tokens."""
    heads, head_dim, tau = similarity.num_heads, similarity.head_dim, similarity.tau
    scores = torch.zeros(image.shape[0], text.shape[0], dtype=image.dtype)
    for i in range(image.shape[0]):
        for j in range(text.shape[0]):
            mixed_heads = []
            for h in range(heads):
                part = slice(h * head_dim, (h + 1) * head_dim)
                query = similarity.query_norm(similarity.query(text[j])[part])
                keys = [similarity.key_norm(similarity.key(token)[part]) for token in image[i]]
                values = [similarity.value_norm(similarity.value(token)[part]) for token in image[i]]
                weights = torch.softmax(torch.stack([key @ query / tau for key in keys]), dim=0)
                mixed_heads.append(sum(w * v for w, v in zip(weights, values)))
            visual = similarity.out(torch.cat(mixed_heads))
            text_embedding = similarity.text_projection(text[j])
            scores[i, j] = visual @ text_embedding / (visual.norm() * text_embedding.norm())
    return scores


def full_batch_loss(loss: losses.ContrastiveLoss, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The loss of the whole batch (row i matches row i) under `loss`'s scorer, objective and parameters."""
    if loss.scorer == "dot":
        scores = dot_scores(image, text)
    else:
        scores = llip_scores(loss.similarity, image, text)
    logits = loss.logit_scale.exp().clamp(max=100) * scores
    batch = image.shape[0]
    if loss.objective.name == "softmax":
        labels = torch.arange(batch)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    signs = 2 * torch.eye(batch, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * (logits + loss.logit_bias)).sum() / batch


def reference(loss: losses.ContrastiveLoss, image: torch.Tensor, text: torch.Tensor) -> Result:
    """Loss and gradients (inputs and every parameter) of the naive loss, computed in float64."""
    double = copy.deepcopy(loss).double()
    image64 = image.detach().double().requires_grad_()
    text64 = text.detach().double().requires_grad_()
    value = full_batch_loss(double, image64, text64)
    value.backward()
    grads = {name: p.grad.float() for name, p in double.named_parameters()}
    return Result(value.item(), image64.grad.float(), text64.grad.float(), grads)
