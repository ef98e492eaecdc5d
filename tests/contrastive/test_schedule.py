import math

import pytest

from contrastive.schedule import lr_at


def test_linear_warmup_then_cosine_to_the_floor():
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_at(35, 2.0, 10, 110) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.25)))
