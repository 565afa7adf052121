"""Reward families, registry, combination and async scoring.

Cheap to import: family modules (jpeg, imagereward, clip_rewards, detection, fairness, shapes)
are imported by the registry only when one of their rewards is built. See
:mod:`rlsd.rewards.base` for the call contract and :mod:`rlsd.rewards.registry` for specs.
"""

from rlsd.rewards.base import (
    AsyncReward,
    CombinedReward,
    DistributionReward,
    Reward,
    group_indices,
    validate_reward_inputs,
)
from rlsd.rewards.registry import available_rewards, build_reward, register_reward

__all__ = [
    "Reward",
    "DistributionReward",
    "CombinedReward",
    "AsyncReward",
    "group_indices",
    "validate_reward_inputs",
    "register_reward",
    "build_reward",
    "available_rewards",
]
