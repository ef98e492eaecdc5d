import pytest
import torch
import torch.nn.functional as F

import losses
from tests.losses.cases import LLIP_DIMS, make_batch, make_loss
from tests.losses.compare import assert_same, measured
from tests.losses.naive import reference


@pytest.mark.parametrize("qkv_norm", [False, True], ids=["plain", "qkv_norm"])
@pytest.mark.parametrize("case", ["llip-ring", "llip-all_gather", "llip-softmax-all_gather"])
def test_matches_naive_full_batch(case, qkv_norm):
    loss = make_loss(case, qkv_norm=qkv_norm, tau=0.5)
    image, text = make_batch("llip", 5)
    assert_same(measured(loss, image, text), reference(loss, image, text))


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
@pytest.mark.parametrize("case", ["llip-ring", "llip-all_gather", "llip-softmax-all_gather"])
def test_chunked_equals_unchunked(case, chunk_size):
    image, text = make_batch("llip", 7)
    unchunked = measured(make_loss(case, chunk_size=None), image, text)
    assert_same(measured(make_loss(case, chunk_size=chunk_size), image, text), unchunked, rtol=1e-5)


def test_chunked_logits_without_grad_equal_unchunked():
    image, text = make_batch("llip", 7)
    with torch.no_grad():
        chunked = make_loss("llip-ring", chunk_size=2).logits(image, text)
    torch.testing.assert_close(chunked, make_loss("llip-ring", chunk_size=None).logits(image, text))


@pytest.mark.parametrize("qkv_norm", [False, True], ids=["plain", "qkv_norm"])
def test_one_mixture_token_and_one_head_reduce_to_a_dot_product(qkv_norm):
    """With K = 1 every attention weight is 1, so the text-conditioned image vector is the projected
    token W_o LN(W_v x + b_v) whatever the query and tau: the score is the cosine of that vector with
    the projected text W_t t."""
    loss = make_loss("llip-ring", num_heads=1, qkv_norm=qkv_norm)
    similarity = loss.similarity
    image, text = make_batch("llip", 4)
    image = image[:, :1]
    with torch.no_grad():
        visual = F.normalize(similarity.out(similarity.value_norm(similarity.value(image[:, 0]))), dim=-1)
        text_embedding = F.normalize(similarity.text_projection(text), dim=-1)
        expected = 4.0 * visual @ text_embedding.T - 1.5
        torch.testing.assert_close(loss.logits(image, text), expected)
        similarity.query.weight.normal_()
        similarity.tau = 0.1
        torch.testing.assert_close(loss.logits(image, text), expected)


def test_text_conditioning_changes_the_image_vector_with_several_tokens():
    loss = make_loss("llip-ring")
    image, text = make_batch("llip", 4)
    with torch.no_grad():
        before = loss.logits(image, text)
        loss.similarity.query.weight.normal_()
        assert not torch.allclose(loss.logits(image, text), before, atol=1e-3)


def test_combine_templates_is_the_plain_mean_of_the_text_states():
    states = torch.tensor([[1.0, 2.0, 0.0, 0.0, 4.0], [3.0, 0.0, 0.0, 2.0, 0.0]])
    torch.testing.assert_close(make_loss("llip-ring").combine_templates(states),
                               torch.tensor([2.0, 1.0, 0.0, 1.0, 2.0]))


def test_owns_the_projections_and_reports_its_scorer():
    loss = make_loss("llip-ring", qkv_norm=True)
    assert loss.scorer == "llip"
    assert loss.similarity.out.bias is None and loss.similarity.text_projection.bias is None
    names = {name for name, _ in loss.named_parameters()}
    assert {"logit_scale", "logit_bias", "similarity.query.weight", "similarity.key.weight",
            "similarity.value.weight", "similarity.out.weight", "similarity.text_projection.weight",
            "similarity.query_norm.weight"} <= names


def test_bad_shapes_and_settings_are_rejected():
    loss = make_loss("llip-ring")
    image, text = make_batch("llip", 3)
    with pytest.raises(ValueError, match=r"mixture tokens \[N, K, 6\].*got image \[3, 6\]"):
        loss(image[:, 0], text)
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        loss(image, text[:2])
    with pytest.raises(ValueError, match="multiple of num_heads=3"):
        losses.build("llip", **{**LLIP_DIMS, "num_heads": 3})
    with pytest.raises(ValueError, match="tau must be positive"):
        losses.build("llip", **LLIP_DIMS, tau=0.0)
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        losses.build("llip", **LLIP_DIMS, chunk_size=0)
