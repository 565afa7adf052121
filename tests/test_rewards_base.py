"""Reward base: validation, registry specs, combination, grouping, async == sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlsd.rewards import (
    AsyncReward,
    CombinedReward,
    DistributionReward,
    Reward,
    available_rewards,
    build_reward,
    group_indices,
    register_reward,
)


class MeanReward(Reward):
    name = "mean_brightness"

    def score(self, images, prompts, metadata):
        value = images.mean(dim=(1, 2, 3))
        return value, {"mean": value}


class GroupSpread(DistributionReward):
    name = "group_spread"

    def score_group(self, images, prompts, metadata):
        means = images.mean(dim=(1, 2, 3))
        return float(means.max() - means.min()), {"member_mean": means, "group_size": float(len(prompts))}


@register_reward("test_mean_brightness")
def _make_mean() -> Reward:
    return MeanReward()


def _batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g), [f"p{i}" for i in range(b)], [{"group": i // 2} for i in range(b)]


@pytest.mark.parametrize(
    "images, prompts, metadata, match",
    [
        (torch.rand(2, 8, 8), ["a", "b"], [{}, {}], "shape"),
        (torch.rand(2, 1, 8, 8), ["a", "b"], [{}, {}], "shape"),
        (torch.rand(2, 3, 8, 8) * 2 - 1, ["a", "b"], [{}, {}], r"\[0, 1\]"),
        (torch.randint(0, 255, (2, 3, 8, 8)), ["a", "b"], [{}, {}], "float"),
        (torch.rand(2, 3, 8, 8), ["a"], [{}, {}], "len\\(prompts\\)"),
        (torch.rand(2, 3, 8, 8), ["a", "b"], [{}], "len\\(metadata\\)"),
        (torch.rand(2, 3, 8, 8), ["a", 3], [{}, {}], "strings"),
    ],
)
def test_validation_rejects_bad_inputs(images, prompts, metadata, match):
    with pytest.raises(ValueError, match=match):
        MeanReward()(images, prompts, metadata)


def test_reward_output_is_float32_batch():
    images, prompts, metadata = _batch()
    rewards, info = MeanReward()(images.double(), prompts, metadata)
    assert rewards.dtype == torch.float32 and rewards.shape == (4,)
    torch.testing.assert_close(rewards, images.mean(dim=(1, 2, 3)).float())


def test_group_indices_and_missing_group():
    assert group_indices([{"group": "b"}, {"group": "a"}, {"group": "b"}]) == {"b": [0, 2], "a": [1]}
    with pytest.raises(ValueError, match=r"metadata\[1\] has no 'group'"):
        group_indices([{"group": 0}, {}])


def test_distribution_reward_broadcasts_group_value():
    images, prompts, metadata = _batch(6)
    metadata = [{"group": g} for g in [0, 1, 0, 1, 2, 2]]
    rewards, info = GroupSpread()(images, prompts, metadata)
    means = images.mean(dim=(1, 2, 3))
    for members in ([0, 2], [1, 3], [4, 5]):
        expected = float(means[members].max() - means[members].min())
        assert torch.allclose(rewards[members], torch.tensor(expected))
    torch.testing.assert_close(info["member_mean"], means)
    assert info["group_size"].tolist() == [2.0] * 6


def test_build_reward_specs_and_unknown_name():
    assert isinstance(build_reward("test_mean_brightness"), MeanReward)
    assert isinstance(build_reward({"name": "test_mean_brightness"}), MeanReward)
    with pytest.raises(ValueError, match="available rewards: .*test_mean_brightness"):
        build_reward("does_not_exist")
    with pytest.raises(ValueError, match="needs a 'name'"):
        build_reward({"weight": 1.0})
    assert "jpeg_compressibility" in available_rewards()


def test_combined_reward_weighted_sum_and_prefixed_info():
    images, prompts, metadata = _batch()
    combined = build_reward(
        {"combine": [{"name": "test_mean_brightness", "weight": 2.0}, {"name": "jpeg_compressibility", "weight": -0.5}]}
    )
    assert isinstance(combined, CombinedReward)
    rewards, info = combined(images, prompts, metadata)
    mean, _ = MeanReward()(images, prompts, metadata)
    jpeg, _ = build_reward("jpeg_compressibility")(images, prompts, metadata)
    torch.testing.assert_close(rewards, 2.0 * mean - 0.5 * jpeg)
    assert {"mean_brightness/reward", "mean_brightness/mean", "jpeg_compressibility/jpeg_kb"} <= set(info)


def test_combined_marks_distribution_level():
    combined = CombinedReward([(1.0, MeanReward()), (1.0, GroupSpread())])
    assert combined.distribution_level


def test_async_equals_sync_and_copies_inputs():
    images, prompts, metadata = _batch(6)
    sync_rewards, sync_info = GroupSpread()(images, prompts, metadata)
    with AsyncReward(GroupSpread(), max_workers=2) as reward:
        future = reward.submit(images, prompts, metadata)
        images.zero_()  # the caller reuses its buffer while scoring runs
        rewards, info = future.result()
    torch.testing.assert_close(rewards, sync_rewards)
    torch.testing.assert_close(info["member_mean"], sync_info["member_mean"])


def test_async_validates_at_submit():
    with AsyncReward(MeanReward()) as reward, pytest.raises(ValueError, match="len\\(prompts\\)"):
        reward.submit(torch.rand(2, 3, 4, 4), ["a"], [{}, {}])


def test_import_is_cheap():
    code = "import sys, rlsd.rewards; print('transformers' in sys.modules, 'cv2' in sys.modules, 'PIL.Image' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]).stdout
    assert out.split() == ["False", "False", "False"]
