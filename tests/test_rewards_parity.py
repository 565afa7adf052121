"""Statistical parity math against closed forms."""

import numpy as np
import pytest
import torch

from rlsd.rewards.parity import bucket_proportions, max_statistical_parity, statistical_parity


def test_uniform_is_zero_and_one_bucket_is_max():
    assert statistical_parity([0, 1, 2, 3] * 3, 4) == pytest.approx(0.0)
    assert statistical_parity([2] * 7, 4) == pytest.approx(0.75)
    assert max_statistical_parity(4) == pytest.approx(0.75)


def test_closed_form_two_buckets_used():
    # p = (1/2, 1/2, 0, 0): 2 * (1/4)^2 + 2 * (1/4)^2 = 0.25
    assert statistical_parity(torch.tensor([0, 1, 0, 1]), 4) == pytest.approx(0.25)
    # p = (3/4, 1/4, 0, 0): (1/2)^2 + 0 + 2 * (1/16) = 0.375
    assert statistical_parity(np.array([0, 0, 0, 1]), 4) == pytest.approx(0.375)


def test_faceless_excluded_and_all_faceless_is_max():
    assert statistical_parity([0, 1, 2, 3, -1, -1], 4, exclude=-1) == pytest.approx(0.0)
    np.testing.assert_allclose(bucket_proportions([0, -1, 0, 1], 4, exclude=-1), [2 / 3, 1 / 3, 0, 0])
    assert statistical_parity([-1, -1, -1], 4, exclude=-1) == pytest.approx(0.75)
    assert statistical_parity([], 4) == pytest.approx(0.75)


def test_out_of_range_ids_error():
    with pytest.raises(ValueError, match="bucket_ids must lie in"):
        statistical_parity([0, 4], 4)
    with pytest.raises(ValueError, match="bucket_ids must lie in"):
        statistical_parity([0, -1], 4)  # -1 without exclude=-1
