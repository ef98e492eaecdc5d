import math

import torch
import torch.nn.functional as F

import losses
from tests.losses.cases import make_batch, make_loss
from tests.losses.compare import assert_same, measured
from tests.losses.naive import reference


def test_matches_naive_full_batch():
    loss = make_loss("clip-all_gather")
    image, text = make_batch("dot", 6)
    assert_same(measured(loss, image, text), reference(loss, image, text))


def test_initial_loss_is_about_log_batch():
    # Cosines of random unit vectors in 1024 dims have std 1/32, so the logits (x 1/0.07) have std ~0.45
    # and the expected loss is log(B) + 0.45^2 / 2 ~ log(B) + 0.1.
    g = torch.Generator().manual_seed(0)
    image, text = (F.normalize(torch.randn(128, 1024, generator=g), dim=-1) for _ in range(2))
    out = losses.build("clip")(image, text)
    assert abs(out["loss"].item() - math.log(128) - 0.1) < 0.1
    assert out["logit_scale"].item() == torch.tensor(1 / 0.07).item()


def test_logit_scale_is_clamped_at_100():
    loss = losses.build("clip")
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(200.0))
    image, text = make_batch("dot", 4)
    torch.testing.assert_close(loss.logits(image, text), 100 * image @ text.T)
    out = loss(image, text)
    out["loss"].backward()
    assert out["logit_scale"].item() == 100.0
    assert loss.logit_scale.grad.item() == 0.0


def test_outputs_are_a_float32_loss_and_detached_metrics():
    loss = make_loss("clip-all_gather")
    out = loss(*(x.requires_grad_() for x in make_batch("dot", 4)))
    assert set(out) == {"loss", "logit_scale"}
    assert out["loss"].dtype == torch.float32 and out["loss"].requires_grad
    assert not out["logit_scale"].requires_grad
    torch.testing.assert_close(out["logit_scale"], torch.tensor(4.0))


def test_logits_are_scaled_cosines_of_every_image_with_every_text():
    loss = make_loss("clip-all_gather")
    image, _ = make_batch("dot", 3)
    _, text = make_batch("dot", 5, seed=1)
    torch.testing.assert_close(loss.logits(image, text), 4.0 * image @ text.T)


def test_combine_templates_normalises_averages_and_renormalises():
    prompts = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    expected = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    torch.testing.assert_close(losses.build("clip").combine_templates(prompts), expected)
