"""Hyper-parameters of the baseline methods (config section ``baseline``) and their validation.

Only the standard library is imported here: :mod:`rlsd.config` builds the section from this module.
The method itself is chosen by ``train.method`` (one of :data:`METHODS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: train.method values: the paper's RL, DDPO (RL update, per-prompt advantages) and the baselines of paper Table 1
METHODS = ("rl", "ddpo", "raft", "rwr", "refl", "draft")
#: methods that backpropagate the reward into the UNet (they need a differentiable reward)
REWARD_GRADIENT_METHODS = ("refl", "draft")
#: methods trained with the denoising loss on their own samples
SUPERVISED_METHODS = ("raft", "rwr")
RWR_WEIGHTINGS = ("exp", "normalized")


@dataclass
class BaselineConfig:
    raft_accept_fraction: float = 1 / 24
    """RAFT: share of each task's global batch kept (top rewards) and fine-tuned on (paper: 1/24)."""
    rwr_beta: float = 0.5
    """RWR: temperature beta of the weights exp(r / beta) (paper Table 6: 0.5)."""
    rwr_weighting: str = "exp"
    """RWR: exp (softmax of r / beta over the global batch) | normalized ((r - min r), normalised to sum 1)."""
    refl_late_fraction: float = 0.25
    """ReFL: the reward-gradient step is drawn uniformly among the last ``max(1, round(f * sample.num_steps))``
    sampling steps (ImageReward: steps 30-39 of 40, f = 0.25)."""
    draft_k: int = 1
    """DRaFT-K: backpropagate the reward through the last K sampling steps."""
    draft_lv: int = 0
    """DRaFT-LV: number n of re-noised copies of the final step (n > 0 needs draft_k = 1; 0 = DRaFT-K; paper: 2)."""


def method_checks(cfg: Any) -> list[tuple[bool, str, str]]:
    """``(ok, field, fix)`` checks of ``cfg.train.method`` against the rest of the config (``RLConfig``)."""
    method, base = cfg.train.method, cfg.baseline
    checks = [(method in METHODS, "train.method", f"must be one of {', '.join(METHODS)}")]
    if method == "ddpo":
        checks.append((all(cfg.task_advantage_mode(i) == "per_prompt" for i in range(len(cfg.tasks))),
                       "train.advantage_mode", "must be per_prompt with train.method=ddpo (DDPO's per-prompt tracker)"))
    if method == "raft":
        checks.append((0 < base.raft_accept_fraction <= 1, "baseline.raft_accept_fraction", "must be in (0, 1]"))
        for i in range(len(cfg.tasks)):
            n = cfg.task_samples(i)
            checks.append((int(base.raft_accept_fraction * n + 1e-9) >= 1, "baseline.raft_accept_fraction",
                           f"keeps no image of the {n} samples of task {i} per iteration; raise "
                           f"sample.num_prompts_per_iter (or tasks.{i}.num_prompts / group_size) to >= "
                           f"{_ceil(1 / base.raft_accept_fraction) if base.raft_accept_fraction > 0 else 1} or raise "
                           "baseline.raft_accept_fraction"))
    if method == "rwr":
        checks.append((base.rwr_beta > 0, "baseline.rwr_beta", "must be > 0 (paper: 0.5)"))
        checks.append((base.rwr_weighting in RWR_WEIGHTINGS, "baseline.rwr_weighting",
                       f"must be one of {', '.join(RWR_WEIGHTINGS)}"))
    if method == "refl":
        checks.append((0 < base.refl_late_fraction <= 1, "baseline.refl_late_fraction",
                       "must be in (0, 1] (ImageReward: 0.25, the last 10 of 40 steps)"))
    if method == "draft":
        checks.append((1 <= base.draft_k <= cfg.sample.num_steps, "baseline.draft_k",
                       f"must be in [1, sample.num_steps={cfg.sample.num_steps}]"))
        checks.append((base.draft_lv >= 0, "baseline.draft_lv", "must be >= 0 (0 = DRaFT-K)"))
        checks.append((base.draft_lv == 0 or base.draft_k == 1, "baseline.draft_k",
                       "must be 1 with baseline.draft_lv > 0 (DRaFT-LV re-noises the final step only)"))
    if method in REWARD_GRADIENT_METHODS + SUPERVISED_METHODS:
        checks.append((method in SUPERVISED_METHODS or cfg.train.inner_epochs == 1, "train.inner_epochs",
                       f"must be 1 with train.method={method} (one reward-gradient step per sampled batch)"))
    return checks


def refl_late_steps(num_steps: int, late_fraction: float) -> int:
    """Number of final sampling steps ReFL draws its reward-gradient step from."""
    return max(1, min(num_steps, round(late_fraction * num_steps)))


def _ceil(x: float) -> int:
    return int(-(-x // 1))
