import pytest
import torch
import torch.nn.functional as F

import losses
from tests.losses.cases import make_batch, make_loss
from tests.losses.compare import assert_same, measured
from tests.losses.naive import reference


@pytest.mark.parametrize("case", ["siglip-ring", "siglip-all_gather"])
def test_matches_naive_full_batch(case):
    loss = make_loss(case)
    image, text = make_batch("dot", 6)
    assert_same(measured(loss, image, text), reference(loss, image, text))


def test_initial_loss_is_about_10():
    # At scale 10 and bias -10 a matching pair of near-orthogonal unit vectors costs -log sigmoid(-10) ~ 10,
    # and the 63 non-matching pairs of each row ~ exp(-10) each.
    g = torch.Generator().manual_seed(0)
    image, text = (F.normalize(torch.randn(64, 64, generator=g), dim=-1) for _ in range(2))
    out = losses.build("siglip")(image, text)
    assert abs(out["loss"].item() - 10.0) < 0.3
    assert out["logit_scale"].item() == pytest.approx(10.0)
    assert out["logit_bias"].item() == -10.0


def test_logits_add_the_bias():
    loss = make_loss("siglip-ring")
    image, text = make_batch("dot", 4)
    torch.testing.assert_close(loss.logits(image, text), 4.0 * image @ text.T - 1.5)


def test_loss_without_grad_equals_loss_with_grad():
    loss = make_loss("siglip-ring")
    image, text = make_batch("dot", 5)
    with torch.no_grad():
        value = loss(image, text)["loss"]
    assert value.item() == pytest.approx(measured(loss, image, text).loss, rel=1e-6)


def test_outputs_carry_scale_and_bias_as_detached_metrics():
    out = make_loss("siglip-ring")(*(x.requires_grad_() for x in make_batch("dot", 4)))
    assert set(out) == {"loss", "logit_scale", "logit_bias"}
    assert not out["logit_scale"].requires_grad and not out["logit_bias"].requires_grad
    assert (out["logit_scale"].item(), out["logit_bias"].item()) == (pytest.approx(4.0), -1.5)


def test_the_scale_is_not_clamped_at_clips_100():
    """SigLIP learns its scale unclamped (big_vision); So400m/14@384's is about 112. CLIP's stays clamped at 100."""
    image, text = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    siglip, clip = losses.build("siglip"), losses.build("clip")
    with torch.no_grad():
        siglip.logit_scale.fill_(torch.tensor(112.0).log())
        clip.logit_scale.fill_(torch.tensor(112.0).log())
    torch.testing.assert_close(siglip.logits(image, text), 112.0 * image @ text.T + siglip.logit_bias)
    torch.testing.assert_close(clip.logits(image, text), 100.0 * image @ text.T)
