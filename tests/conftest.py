import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("CONTRASTIVE_TEST_THREADS", "2")))


def pytest_collection_modifyitems(config, items):
    """Slurm tests skip without a reachable cluster, except in CI, where a skip is a failure."""
    from tests.slurm_cluster import slurm_unavailable_reason

    reason = slurm_unavailable_reason()
    if reason is None:
        return
    needs_slurm = [item for item in items if item.get_closest_marker("slurm")]  # not keywords: they hold path parts
    if os.environ.get("CONTRASTIVE_REQUIRE_SLURM") == "1" and needs_slurm:
        raise pytest.UsageError(f"CONTRASTIVE_REQUIRE_SLURM=1 but Slurm is unavailable: {reason}")
    for item in needs_slurm:
        item.add_marker(pytest.mark.skip(reason=reason))
