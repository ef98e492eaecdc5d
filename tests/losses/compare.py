"""Run a loss module with gradients and compare the result with the naive reference."""
from __future__ import annotations

from typing import NamedTuple

import torch

import losses


class Result(NamedTuple):
    loss: float
    image_grad: torch.Tensor
    text_grad: torch.Tensor
    param_grads: dict[str, torch.Tensor]


def measured(loss: losses.ContrastiveLoss, image: torch.Tensor, text: torch.Tensor) -> Result:
    loss.zero_grad(set_to_none=True)
    image = image.detach().clone().requires_grad_()
    text = text.detach().clone().requires_grad_()
    out = loss(image, text)
    out["loss"].backward()
    return Result(out["loss"].item(), image.grad, text.grad,
                  {name: p.grad.clone() for name, p in loss.named_parameters()})


def assert_same(actual: Result, expected: Result, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.loss, expected.loss, rtol=rtol, atol=atol)
    torch.testing.assert_close(actual.image_grad, expected.image_grad, rtol=rtol, atol=atol)
    torch.testing.assert_close(actual.text_grad, expected.text_grad, rtol=rtol, atol=atol)
    assert actual.param_grads.keys() == expected.param_grads.keys()
    for name, grad in expected.param_grads.items():
        torch.testing.assert_close(actual.param_grads[name], grad, rtol=rtol, atol=atol, msg=name)
