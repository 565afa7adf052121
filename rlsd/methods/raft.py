"""RAFT (Dong et al. 2023, "Reward rAnked FineTuning"): keep the best samples, fine-tune on them.

Per task and iteration: sample the global batch, keep the top ``baseline.raft_accept_fraction`` (paper: 1/24)
by reward, and train the denoising loss on the kept samples (:func:`rlsd.methods.common.weighted_denoising_loss`
with these weights; the update loop is :class:`rlsd.methods.supervised.SupervisedUpdate`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def num_accepted(num_samples: int, accept_fraction: float) -> int:
    """How many of ``num_samples`` RAFT keeps: ``floor(accept_fraction * num_samples)`` (round-off tolerant)."""
    return int(accept_fraction * num_samples + 1e-9)


def raft_weights(rewards: Tensor, accept_fraction: float) -> Tensor:
    """``(B,)`` float32 weights: ``1 / k`` on the ``k`` highest rewards, 0 elsewhere (ties: lower index first).

    Args:
        rewards: ``(B,)`` rewards of the global batch.
        accept_fraction: share kept; ``k = floor(accept_fraction * B)`` must be >= 1.
    """
    k = num_accepted(rewards.numel(), accept_fraction)
    if k < 1:
        raise ValueError(f"baseline.raft_accept_fraction={accept_fraction} keeps no sample of a batch of "
                         f"{rewards.numel()}; raise the batch size or the fraction.")
    order = torch.sort(rewards.detach().float().cpu(), descending=True, stable=True).indices
    weights = torch.zeros(rewards.numel(), dtype=torch.float32)
    weights[order[:k]] = 1.0 / k
    return weights
