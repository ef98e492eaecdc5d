import contextlib

import pytest
import torch

from contrastive.config import load_config
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.step import forward_backward
from tests.contrastive.tiny_run import TINY_MODEL


@pytest.mark.parametrize("loss_name", ["clip", "siglip", "llip"])
def test_a_tiny_model_overfits_a_fixed_batch(loss_name):
    cfg = load_config(None, [*TINY_MODEL, f"loss.name={loss_name}", "optim.lr=2e-3", "optim.weight_decay=0"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=40, pad_id=0)
    optimizer = build_optimizer(model, cfg.optim)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, 40, (8, 12), generator=g)
    losses = []
    for _ in range(80):
        out = forward_backward(model, model, images, tokens, contextlib.nullcontext)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out["loss"].item())
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    model.eval()
    with torch.no_grad():
        logits = model.logits(model.encode_image(images), model.encode_text(tokens))
    assert torch.equal(logits.argmax(dim=1), torch.arange(8))  # each image retrieves its own caption
