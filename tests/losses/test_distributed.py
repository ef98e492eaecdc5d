"""The distributed contract (docs/losses.md), for every loss and exchange at W = 2 and 3.

Each rank passes its rows of one global batch. Then: the mean over ranks of out["loss"] is the naive
full-batch loss; each rank's input gradient is W x the full-batch gradient of its rows; the mean over
ranks of every parameter gradient (what DDP applies) is the full-batch parameter gradient. One spawn per
W checks every case, and also that uneven local batches are refused on every rank.
"""
import functools

import pytest
import torch
import torch.distributed as dist

from losses import distributed
from tests.losses.cases import CASES, make_batch, make_loss
from tests.losses.compare import measured
from tests.losses.naive import reference
from tests.multiprocess import run_ranks

LOCAL_BATCH = 4


def _every_case_on_this_rank() -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    results = {}
    for case in CASES:
        loss = make_loss(case)
        image, text = make_batch(loss.scorer, LOCAL_BATCH * world)
        results[case] = measured(loss, image[rows], text[rows])
    loss = make_loss("siglip-ring")
    image, text = make_batch("dot", LOCAL_BATCH * world)
    uneven = LOCAL_BATCH - 1 if rank == world - 1 else LOCAL_BATCH
    try:
        loss(image[:uneven], text[:uneven])
        results["uneven"] = "accepted"
    except ValueError as e:
        results["uneven"] = str(e)
    # a batch size that changes on every rank alike is fine (checked once more, then trusted)
    results["smaller"] = loss(image[rank * 2:rank * 2 + 2], text[rank * 2:rank * 2 + 2])["loss"].item()
    return results


@functools.cache
def ranks_results(world: int) -> list[dict]:
    return run_ranks(_every_case_on_this_rank, world)


@pytest.mark.parametrize("world", [2, 3], ids=["W2", "W3"])
@pytest.mark.parametrize("case", list(CASES))
def test_contract_holds(case, world):
    results = [r[case] for r in ranks_results(world)]
    loss = make_loss(case)
    image, text = make_batch(loss.scorer, LOCAL_BATCH * world)
    expected = reference(loss, image, text)
    assert sum(r.loss for r in results) / world == pytest.approx(expected.loss, rel=1e-5)
    for rank, r in enumerate(results):
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        torch.testing.assert_close(r.image_grad, world * expected.image_grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(r.text_grad, world * expected.text_grad[rows], rtol=1e-4, atol=1e-6)
    for name, grad in expected.param_grads.items():
        mean = sum(r.param_grads[name] for r in results) / world
        torch.testing.assert_close(mean, grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("world", [2, 3], ids=["W2", "W3"])
@pytest.mark.parametrize("loss_name", ["siglip", "llip"])
def test_ring_equals_all_gather(loss_name, world):
    for ring, gathered in zip(*([r[f"{loss_name}-{x}"] for r in ranks_results(world)] for x in ("ring", "all_gather"))):
        assert ring.loss == pytest.approx(gathered.loss, rel=1e-6)
        torch.testing.assert_close(ring.image_grad, gathered.image_grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ring.text_grad, gathered.text_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("world", [2, 3], ids=["W2", "W3"])
def test_uneven_local_batches_are_refused_on_every_rank(world):
    sizes = ", ".join(f"rank {r}: {LOCAL_BATCH - (r == world - 1)}" for r in range(world))
    for r in ranks_results(world):
        assert r["uneven"] == (f"local batch sizes differ across ranks ({sizes}); every rank must pass "
                               f"the same number of pairs (drop the last partial batch)")
    image, text = make_batch("dot", LOCAL_BATCH * world)
    expected = reference(make_loss("siglip-ring"), image[:2 * world], text[:2 * world]).loss
    assert sum(r["smaller"] for r in ranks_results(world)) / world == pytest.approx(expected, rel=1e-5)


def test_helpers_work_without_a_process_group():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    x = torch.randn(3, 2)
    assert distributed.all_gather_with_grad(x) is x
    assert distributed.send_to_next_rank(x) is x
    assert [(owner, block is x) for owner, block in distributed.ring_pass(x)] == [(0, True)]
    assert distributed.gather_sizes(3, x.device) == [3]
