"""Reward base classes, input validation, combination, grouping and async scoring.

Every reward maps a batch of images to one scalar per image::

    rewards, info = reward(images, prompts, metadata)
    # images   (B, 3, H, W) float in [0, 1]
    # prompts  list[str] of length B
    # metadata list[dict] of length B (distribution-level rewards read metadata[i]["group"])
    # rewards  (B,) float32 on CPU
    # info     dict[str, Tensor (B,) | float] of named diagnostics

Distribution-level rewards (``distribution_level = True``) score a *set* of images: they are
computed once per prompt group and the group value is handed to every image of the group. The
trainer keeps each prompt group on one rank, so no gather is ever needed inside a reward
(docs/architecture.md, "Distribution-level rewards in distributed training").
"""

from __future__ import annotations

import copy
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Hashable, Sequence

import torch
from torch import Tensor

__all__ = [
    "Reward",
    "DistributionReward",
    "CombinedReward",
    "AsyncReward",
    "validate_reward_inputs",
    "group_indices",
    "CREDITS",
]

_RANGE_TOL = 1e-4  # tolerated overshoot of [0, 1] from float round-off in decoders


def validate_reward_inputs(images: Any, prompts: Any, metadata: Any) -> None:
    """Raise ``ValueError`` naming the problem if the reward inputs break the contract.

    Args:
        images: expected float tensor (B, 3, H, W) with values in [0, 1].
        prompts: expected list of B strings.
        metadata: expected list of B dicts.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    if images.numel() > 0:
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= -_RANGE_TOL and hi <= 1 + _RANGE_TOL):
            raise ValueError(f"images must lie in [0, 1], got min {lo:.4g} max {hi:.4g}; map [-1, 1] with (x + 1) / 2")
    batch = images.shape[0]
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list of strings")
    if len(prompts) != batch:
        raise ValueError(f"len(prompts)={len(prompts)} does not match the image batch size {batch}")
    if not isinstance(metadata, (list, tuple)) or not all(isinstance(m, dict) for m in metadata):
        raise ValueError("metadata must be a list of dicts (use [{}] * B when there is none)")
    if len(metadata) != batch:
        raise ValueError(f"len(metadata)={len(metadata)} does not match the image batch size {batch}")


def group_indices(metadata: Sequence[dict]) -> dict[Hashable, list[int]]:
    """Map each ``metadata[i]["group"]`` to the batch indices in that group (first-seen order).

    Raises:
        ValueError: if an entry has no ``"group"`` key.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, meta in enumerate(metadata):
        if "group" not in meta:
            raise ValueError(f"metadata[{i}] has no 'group' key; distribution-level rewards need a prompt group id per image")
        groups.setdefault(meta["group"], []).append(i)
    return groups


class Reward:
    """Base reward. Subclasses implement :meth:`score`; ``__call__`` validates inputs and outputs."""

    name: str = "reward"
    distribution_level: bool = False

    def __call__(self, images: Tensor, prompts: Sequence[str], metadata: Sequence[dict]) -> tuple[Tensor, dict]:
        """Score ``images`` (B, 3, H, W) in [0, 1]; return rewards (B,) float32 on CPU and an info dict."""
        validate_reward_inputs(images, prompts, metadata)
        rewards, info = self.score(images, list(prompts), list(metadata))
        rewards = torch.as_tensor(rewards).detach().to("cpu", torch.float32)
        if rewards.shape != (images.shape[0],):
            raise ValueError(f"reward {self.name!r} returned shape {tuple(rewards.shape)}, expected ({images.shape[0]},)")
        return rewards, info

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        """Compute rewards (B,) and info for already-validated inputs."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, distribution_level={self.distribution_level})"


#: how a group's value becomes its members' rewards (DistributionReward.credit)
CREDITS = ("group", "leave_one_out")


class DistributionReward(Reward):
    """A reward defined on a set of images: computed per prompt group, then credited to its members.

    Subclasses implement :meth:`score_group`. Per-image info tensors (g,) returned for a group are
    scattered back into (B,) tensors; group-level floats are broadcast to every member.

    ``credit`` (a constructor argument of the subclasses that offer it):

    - ``"group"`` (the paper): every member of group G gets F(G).
    - ``"leave_one_out"``: member i gets F(G) - F(G without i), its marginal contribution. F(G without i)
      does not depend on image i (samples are drawn independently), so it acts as a per-image baseline:
      the REINFORCE estimate of the gradient of E[F(G)] keeps its expectation (before the trainer's
      advantage normalisation), while each image is credited with its own effect (an image of an
      over-represented bucket is negative, one of a missing bucket positive) instead of sharing one noisy
      group value. Costs one extra ``score_group`` call per member.
    """

    distribution_level = True
    credit = "group"

    def _check_credit(self, credit: str) -> str:
        if credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}")
        return credit

    def score_group(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[float, dict]:
        """Return the group's reward and info (tensors (g,) per image or floats per group)."""
        raise NotImplementedError

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        batch = images.shape[0]
        rewards = torch.zeros(batch, dtype=torch.float32)
        info: dict[str, Tensor] = {}
        for idx in group_indices(metadata).values():
            value, group_info = self.score_group(images[idx], [prompts[i] for i in idx], [metadata[i] for i in idx])
            index = torch.tensor(idx)
            rewards[index] = float(value)
            if self.credit == "leave_one_out" and len(idx) > 1:
                for i in idx:
                    rest = [k for k in idx if k != i]
                    rest_value, _ = self.score_group(images[rest], [prompts[k] for k in rest], [metadata[k] for k in rest])
                    rewards[i] = float(value) - float(rest_value)
                group_info = {**group_info, "group_value": float(value)}
            for key, val in group_info.items():
                val = torch.as_tensor(val, dtype=torch.float32).detach().cpu()
                info.setdefault(key, torch.zeros(batch, dtype=torch.float32))[index] = val
        return rewards, info


class CombinedReward(Reward):
    """Weighted sum ``sum_k w_k * r_k`` of component rewards.

    Info keys are prefixed by the component name (``"<name>/reward"`` holds the raw component
    reward, ``"<name>/<key>"`` its diagnostics). Repeated names get a ``#k`` suffix.
    """

    def __init__(self, components: Sequence[tuple[float, Reward]], name: str = "combined"):
        if not components:
            raise ValueError("CombinedReward needs at least one component; give {'combine': [{'name': ..., 'weight': ...}]}")
        self.components = list(components)
        self.name = name
        self.distribution_level = any(r.distribution_level for _, r in self.components)
        self.labels: list[str] = []
        for _, reward in self.components:
            label = reward.name if reward.name not in self.labels else f"{reward.name}#{len(self.labels)}"
            self.labels.append(label)

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        total = torch.zeros(images.shape[0], dtype=torch.float32)
        info: dict[str, Any] = {}
        for label, (weight, reward) in zip(self.labels, self.components):
            values, sub_info = reward(images, prompts, metadata)
            total += float(weight) * values
            info[f"{label}/reward"] = values
            info.update({f"{label}/{key}": val for key, val in sub_info.items()})
        return total, info


class AsyncReward:
    """Run a reward in a thread pool so the trainer can score batch n while sampling batch n+1.

    ``submit`` copies its inputs (so the caller may reuse its buffers) and returns a ``Future``
    resolving to ``(rewards (B,), info)``, exactly what the wrapped reward returns synchronously.
    """

    def __init__(self, reward: Reward, max_workers: int = 1):
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.reward = reward
        self.name = reward.name
        self.distribution_level = reward.distribution_level
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"reward-{reward.name}")

    def submit(self, images: Tensor, prompts: Sequence[str], metadata: Sequence[dict]) -> Future:
        """Schedule ``reward(images, prompts, metadata)``; inputs are validated now, scored later."""
        validate_reward_inputs(images, prompts, metadata)
        return self._pool.submit(self.reward, images.detach().clone(), list(prompts), copy.deepcopy(list(metadata)))

    def __call__(self, images: Tensor, prompts: Sequence[str], metadata: Sequence[dict]) -> tuple[Tensor, dict]:
        """Synchronous scoring (same as the wrapped reward)."""
        return self.submit(images, prompts, metadata).result()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the worker threads (pending futures finish first when ``wait``)."""
        self._pool.shutdown(wait=wait)

    def __enter__(self) -> "AsyncReward":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
