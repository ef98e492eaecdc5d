from data.seeding import derive_seed, generator, unit_interval

import torch


def test_derive_seed_is_stable_across_runs():
    # Checkpointed stream positions rely on this exact function; a change breaks resuming old runs.
    assert derive_seed("shards", 0, 0, 0) == 5434566241791197362
    assert 0 <= derive_seed("x") < 2**63


def test_different_keys_give_different_draws():
    seeds = {derive_seed("sample", 0, 0, epoch, slot, position)
             for epoch in range(3) for slot in range(4) for position in range(50)}
    assert len(seeds) == 3 * 4 * 50
    assert derive_seed(1, 2) != derive_seed(2, 1) != derive_seed("1", 2)


def test_unit_interval_is_uniform():
    draws = torch.tensor([unit_interval("mix", 0, 0, n) for n in range(20000)])
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert abs((draws < 0.25).float().mean().item() - 0.25) < 0.015


def test_generator_depends_only_on_key():
    a = torch.rand(3, generator=generator("sample", 1, 2))
    assert torch.equal(a, torch.rand(3, generator=generator("sample", 1, 2)))
    assert not torch.equal(a, torch.rand(3, generator=generator("sample", 1, 3)))
