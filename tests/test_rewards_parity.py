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


def leave_one_out(ids: list[int], missing: str) -> list[float]:
    """Per-image credit -SP(G) + SP(G without i), as DistributionReward(credit="leave_one_out") gives it."""
    full = statistical_parity(ids, 4, exclude=-1, missing=missing)
    return [full * -1 + statistical_parity(ids[:i] + ids[i + 1:], 4, exclude=-1, missing=missing) for i in range(len(ids))]


def test_missing_worst_closed_form_and_limits():
    # 2 of 4 missing, the counted two in different buckets: SP(counted) = 0.25, so 0.5 * 0.25 + 0.5 * 0.75
    assert statistical_parity([0, 1, -1, -1], 4, exclude=-1, missing="worst") == pytest.approx(0.5)
    assert statistical_parity([-1] * 5, 4, exclude=-1, missing="worst") == pytest.approx(0.75)
    assert statistical_parity([0, 1, 2, 3], 4, exclude=-1, missing="worst") == pytest.approx(0.0)
    assert statistical_parity([0, 0, 0, 1], 4, exclude=-1, missing="worst") == pytest.approx(0.375)  # none missing


def test_leave_one_out_credits_a_missing_image_below_a_majority_one_only_with_missing_worst():
    group = [0] * 6 + [1, -1]  # 6 of the majority bucket, 1 rare, 1 missing
    excl, worst = leave_one_out(group, "exclude"), leave_one_out(group, "worst")
    assert excl[7] == pytest.approx(0.0) and excl[0] < excl[7]  # the hack: missing beats majority
    assert worst[7] < worst[0] < 0 < worst[6]
    assert worst == pytest.approx([-0.0238] * 6 + [0.2143, -0.0306], abs=1e-4)


def test_unknown_missing_convention_errors():
    with pytest.raises(ValueError, match="missing must be one of"):
        statistical_parity([0, 1], 4, missing="count")
