import pytest
import torch

from tests.losses.cases import CASES, make_batch, make_loss


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_logits_are_float32_under_bf16_autocast(case):
    loss = make_loss(case)
    image, text = (x.bfloat16() for x in make_batch(loss.scorer, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(image, text)
        logits = loss.logits(image, text)
    assert out["loss"].dtype == logits.dtype == torch.float32
    # the same as the float32 computation on the (bf16-rounded) inputs cast up: nothing inside ran in bf16
    torch.testing.assert_close(out["loss"], loss(image.float(), text.float())["loss"], rtol=1e-6, atol=0)
    torch.testing.assert_close(logits, loss.logits(image.float(), text.float()), rtol=1e-6, atol=0)
