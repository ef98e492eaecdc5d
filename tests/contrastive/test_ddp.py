"""A W = 2 gloo DDP run of the whole tiny model, fed the same global batches split by rank, matches one
process on the full batches: for every loss, with and without gradient accumulation. This catches unused
parameters, wrong gathers and a broken accumulation path end to end. A frozen image tower (LiT) gets no gradient
bucket, no gradient and no update, and the rest still matches one process."""
import contextlib

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from contrastive.config import load_config
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.step import forward_backward
from tests.contrastive.tiny_run import TINY_MODEL
from tests.multiprocess import run_ranks

LOSSES = ("clip", "siglip", "llip")
VOCAB, PAD, STEPS, GLOBAL_BATCH = 50, 0, 2, 8


def global_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(STEPS):
        images = torch.randint(0, 256, (GLOBAL_BATCH, 3, 32, 32), dtype=torch.uint8, generator=g)
        tokens = torch.randint(1, VOCAB, (GLOBAL_BATCH, 12), generator=g)
        lengths = torch.randint(3, 12, (GLOBAL_BATCH, 1), generator=g)
        tokens[torch.arange(12).expand(GLOBAL_BATCH, 12) >= lengths] = PAD
        batches.append((images, tokens))
    return batches


def trained(loss_name: str, accum_steps: int, rank: int, world_size: int, *overrides: str):
    """(gradients after the first step, weights after STEPS steps) on this rank's share of the batches; a gradient
    of None where a parameter got none."""
    cfg = load_config(None, [*TINY_MODEL, f"loss.name={loss_name}", "optim.weight_decay=0.1", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD)
    wrapped = DistributedDataParallel(model) if world_size > 1 else model
    optimizer = build_optimizer(model, cfg.optim)
    local = GLOBAL_BATCH // world_size
    first_grads = None
    for images, tokens in global_batches():
        rows = slice(rank * local, (rank + 1) * local)
        forward_backward(model, wrapped, images[rows], tokens[rows], contextlib.nullcontext, accum_steps)
        if first_grads is None:
            first_grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return first_grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def bucketed_tensors(*overrides: str) -> int:
    """How many parameter tensors DDP's reducer holds gradient buckets for."""
    cfg = load_config(None, [*TINY_MODEL, *overrides])
    wrapped = DistributedDataParallel(build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD))
    return wrapped._get_ddp_logging_data()["num_parameter_tensors"]


def assert_all_close(actual: dict, expected: dict, rtol: float = 1e-4) -> None:
    """Elementwise close, with an absolute floor scaled to the largest entry of all tensors: some gradients are
    zero in exact arithmetic (a key bias under a softmax over keys) and only rounding noise in practice."""
    assert actual.keys() == expected.keys()
    scale = max(t.abs().max().item() for t in expected.values())
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=rtol, atol=rtol * scale, msg=name)


FROZEN_IMAGE = "model.image.frozen=true"


def _all_losses_on_this_rank():
    results = {(name, accum): trained(name, accum, dist.get_rank(), dist.get_world_size())
               for name in LOSSES for accum in (1, 2)}
    results["frozen"] = trained("clip", 1, dist.get_rank(), dist.get_world_size(), FROZEN_IMAGE)
    results["buckets"] = (bucketed_tensors(), bucketed_tensors(FROZEN_IMAGE))
    return results


@pytest.fixture(scope="module")
def two_ranks():
    return run_ranks(_all_losses_on_this_rank, 2)


@pytest.mark.parametrize("accum_steps", [1, 2])
@pytest.mark.parametrize("loss_name", LOSSES)
def test_two_process_ddp_matches_one_process(two_ranks, loss_name, accum_steps):
    single_grads, single_weights = trained(loss_name, 1, rank=0, world_size=1)
    for rank_result in two_ranks:
        grads, weights = rank_result[(loss_name, accum_steps)]
        assert_all_close(grads, single_grads)  # every parameter got a gradient, equal to the full-batch one
        assert_all_close(weights, single_weights)


@pytest.mark.parametrize("loss_name", LOSSES)
def test_accumulation_equals_no_accumulation(loss_name):
    grads, weights = trained(loss_name, 1, rank=0, world_size=1)
    grads_accum, weights_accum = trained(loss_name, 4, rank=0, world_size=1)
    assert_all_close(grads_accum, grads)
    assert_all_close(weights_accum, weights)


def test_a_frozen_image_tower_has_no_ddp_bucket_no_gradient_and_no_update_and_the_rest_matches(two_ranks):
    single_grads, single_weights = trained("clip", 1, 0, 1, FROZEN_IMAGE)
    cfg = load_config(None, TINY_MODEL)
    torch.manual_seed(0)
    initial = {n: p.detach() for n, p in build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD)
               .named_parameters()}
    image_tensors = sum(1 for n in initial if n.startswith("image_tower."))
    for rank_result in two_ranks:
        everything, without_image = rank_result["buckets"]
        assert (everything, without_image) == (len(initial), len(initial) - image_tensors)
        grads, weights = rank_result["frozen"]
        for name, grad in grads.items():
            assert (grad is None) == name.startswith("image_tower."), name
            if name.startswith("image_tower."):
                assert torch.equal(weights[name], initial[name]), name
        trainable = [n for n in grads if grads[n] is not None]
        assert_all_close({n: grads[n] for n in trainable}, {n: single_grads[n] for n in trainable})
        assert_all_close(weights, single_weights)
