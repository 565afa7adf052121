"""PPO-clip objective and advantage normalisation (torch only; no accelerate, no files).

Paper symbols (Kislyuk et al. 2024, Alg. 1) and the names used here:

==========================================  ===================  =======================
paper                                       name here            shape
==========================================  ===================  =======================
r(x_0, c)       reward of a sample          ``rewards``          (B,)
A = (r - mean r) / (std r + 1e-7)           ``advantages``       (B,)
pi_theta(x_{t-1}|x_t,c) / pi_old(...)       ``ratio``            (B,)
log pi_theta(x_{t-1}|x_t,c)                 ``log_prob``         (B,)
log pi_old(x_{t-1}|x_t,c)                   ``old_log_prob``     (B,)
epsilon (ratio clip, 1e-4 in the paper)     ``clip_range``       scalar
clamp of A to [-10, 10]                     ``clip``             scalar
==========================================  ===================  =======================

The statistics are taken over the *global* batch: the caller gathers the rewards of all ranks
(``rlsd.distributed.gather_tensor``) before calling :func:`normalize_advantages`, so the result
does not depend on how the batch is split.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch
from torch import Tensor

from rlsd.config import ADVANTAGE_MODES  # one list of modes for the config check and this function


def ppo_clip_loss(advantages: Tensor, ratio: Tensor, clip_range: float = 1e-4) -> Tensor:
    """PPO clipped surrogate loss (to minimise), in the cleanrl / DDPO form.

    ``loss = mean_i max(-A_i * ratio_i, -A_i * clamp(ratio_i, 1 - clip_range, 1 + clip_range))``

    Args:
        advantages: (B,) advantages; treated as constants (detached).
        ratio: (B,) probability ratios pi_theta / pi_old of the taken step, with grad.
        clip_range: epsilon of the ratio clip (paper: 1e-4).

    Returns:
        Scalar tensor.
    """
    if advantages.shape != ratio.shape:
        raise ValueError(
            f"advantages shape {tuple(advantages.shape)} != ratio shape {tuple(ratio.shape)}; "
            "pass one advantage per ratio"
        )
    advantages = advantages.detach().to(ratio.dtype)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped).mean()


@torch.no_grad()
def ppo_diagnostics(log_prob: Tensor, old_log_prob: Tensor, clip_range: float) -> dict[str, float]:
    """Diagnostics of one PPO step, as logged by cleanrl / DDPO.

    Args:
        log_prob: (B,) log-prob under the current policy.
        old_log_prob: (B,) log-prob under the sampling policy.
        clip_range: ratio clip epsilon.

    Returns:
        ``approx_kl`` = 0.5 * mean((log r)^2) (DDPO), ``approx_kl_k3`` = mean((r - 1) - log r)
        (Schulman's k3 estimator, unbiased and >= 0), ``clipfrac`` = fraction with
        |r - 1| > clip_range, and ``ratio_mean`` / ``ratio_min`` / ``ratio_max``.
    """
    log_ratio = (log_prob.detach() - old_log_prob.detach()).double()
    ratio = log_ratio.exp()
    return {
        "approx_kl": float(0.5 * (log_ratio**2).mean()),
        "approx_kl_k3": float(((ratio - 1.0) - log_ratio).mean()),
        "clipfrac": float(((ratio - 1.0).abs() > clip_range).double().mean()),
        "ratio_mean": float(ratio.mean()),
        "ratio_min": float(ratio.min()),
        "ratio_max": float(ratio.max()),
    }


def _standardize(rewards: Tensor, eps: float, what: str) -> Tensor:
    """(r - mean) / (std + eps) with torch's default *unbiased* std, as the paper's code does."""
    if rewards.numel() < 2:
        raise ValueError(
            f"{what} has {rewards.numel()} reward(s); normalising needs at least 2, "
            "increase the batch / group size"
        )
    return (rewards - rewards.mean()) / (rewards.std() + eps)


def normalize_advantages(
    rewards: Tensor,
    *,
    mode: str = "global_batch",
    group_ids: Tensor | Sequence[int] | None = None,
    prompts: Sequence[str] | None = None,
    tracker: PerPromptStatTracker | None = None,
    eps: float = 1e-7,
    clip: float | None = 10.0,
) -> Tensor:
    """Turn rewards into advantages.

    Modes:
        ``global_batch`` (paper): ``(r - r.mean()) / (r.std() + eps)`` over the whole (already
            gathered) batch. ``r.std()`` is torch's default **unbiased** std (Bessel-corrected),
            exactly as in the paper's official code.
        ``group`` (GRPO-style): the same formula within each value of ``group_ids``.
        ``group_center``: ``r`` minus its group's mean, divided by the std of those centred values over the
            whole batch. It removes the prompt's difficulty (which dominates a global-batch advantage when
            images of one prompt score alike) without ``group``'s per-group std, which blows tiny in-group
            differences (reward-model noise) up to +-1.
        ``per_prompt`` (DDPO): ``tracker.update(prompts, rewards)``; see :class:`PerPromptStatTracker`.

    In every mode the result is clamped to ``[-clip, clip]`` (paper: 10); ``clip=None`` disables it.

    Args:
        rewards: (B,) rewards of the global batch.
        group_ids: (B,) integer group id per sample (``group`` mode).
        prompts: B prompt strings (``per_prompt`` mode).
        tracker: stat tracker (``per_prompt`` mode), updated in place.

    Returns:
        (B,) float32 advantages on the device of ``rewards``.
    """
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape (B,), got {tuple(rewards.shape)}; flatten them first")
    r = rewards.detach().float()
    if mode == "global_batch":
        adv = _standardize(r, eps, "the global batch")
    elif mode == "group":
        adv = _group_advantages(r, group_ids, eps)
    elif mode == "group_center":
        adv = _standardize(r - _group_means(r, group_ids), eps, "the group-centred batch")
    elif mode == "per_prompt":
        if tracker is None or prompts is None:
            raise ValueError("advantage mode 'per_prompt' needs tracker= and prompts=; pass both")
        adv = tracker.update(prompts, r, eps=eps).to(r.device)
    else:
        raise ValueError(f"unknown advantage mode {mode!r}; use one of {ADVANTAGE_MODES}")
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return adv


def _group_masks(rewards: Tensor, group_ids: Tensor | Sequence[int] | None) -> list[tuple[int, Tensor]]:
    """``(group id, (B,) bool mask)`` for every group id present; rewards (B,), group_ids (B,)."""
    if group_ids is None:
        raise ValueError("advantage modes 'group' and 'group_center' need group_ids=; pass one integer id per sample")
    ids = torch.as_tensor(group_ids, device=rewards.device)
    if ids.shape != rewards.shape:
        raise ValueError(f"group_ids shape {tuple(ids.shape)} != rewards shape {tuple(rewards.shape)}")
    return [(int(gid), ids == gid) for gid in torch.unique(ids)]


def _group_means(rewards: Tensor, group_ids: Tensor | Sequence[int] | None) -> Tensor:
    """(B,) mean reward of each sample's group; every group needs >= 2 samples."""
    means = torch.empty_like(rewards)
    for gid, mask in _group_masks(rewards, group_ids):
        if int(mask.sum()) < 2:
            raise ValueError(f"group {gid} has 1 reward; 'group_center' needs at least 2 per group, raise group_size")
        means[mask] = rewards[mask].mean()
    return means


def _group_advantages(rewards: Tensor, group_ids: Tensor | Sequence[int] | None, eps: float) -> Tensor:
    """Standardise rewards within each group id; rewards (B,), group_ids (B,)."""
    adv = torch.empty_like(rewards)
    for gid, mask in _group_masks(rewards, group_ids):
        adv[mask] = _standardize(rewards[mask], eps, f"group {gid}")
    return adv


class PerPromptStatTracker:
    """DDPO's per-prompt running statistics.

    For every prompt the last ``buffer_size`` rewards are kept. A sample's advantage is
    ``(r - mean_p) / (std_p + eps)`` with the prompt's buffer statistics once the buffer holds
    at least ``min_count`` rewards, otherwise with the statistics of the current batch.
    As in DDPO, std here is the **population** std (``unbiased=False``, ``np.std``).
    """

    def __init__(self, buffer_size: int = 16, min_count: int = 16) -> None:
        if buffer_size < 1 or min_count < 1:
            raise ValueError("PerPromptStatTracker needs buffer_size >= 1 and min_count >= 1")
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.stats: dict[str, deque[float]] = {}

    def update(self, prompts: Sequence[str], rewards: Tensor, eps: float = 1e-7) -> Tensor:
        """Add the batch to the buffers and return (B,) float32 advantages (on CPU)."""
        r = rewards.detach().float().cpu()
        if len(prompts) != r.numel():
            raise ValueError(f"got {len(prompts)} prompts for {r.numel()} rewards; pass one prompt per reward")
        batch_mean, batch_std = r.mean(), r.std(unbiased=False)
        adv = torch.empty_like(r)
        for prompt in dict.fromkeys(prompts):  # unique, in order of first appearance
            idx = torch.tensor([i for i, p in enumerate(prompts) if p == prompt])
            buf = self.stats.setdefault(prompt, deque(maxlen=self.buffer_size))
            buf.extend(r[idx].tolist())
            if len(buf) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                hist = torch.tensor(list(buf))
                mean, std = hist.mean(), hist.std(unbiased=False)
            adv[idx] = (r[idx] - mean) / (std + eps)
        return adv

    def state_dict(self) -> dict:
        """Plain-python state for checkpoints."""
        return {
            "buffer_size": self.buffer_size,
            "min_count": self.min_count,
            "stats": {p: list(buf) for p, buf in self.stats.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        self.buffer_size = int(state["buffer_size"])
        self.min_count = int(state["min_count"])
        self.stats = {p: deque(v, maxlen=self.buffer_size) for p, v in state["stats"].items()}
