"""Reward-weighted regression (Lee et al. 2023, "Aligning text-to-image models using human feedback").

The denoising loss on the model's own samples, each weighted by its reward: ``exp(r / beta)`` normalised over
the global batch (a softmax; paper Table 6: beta 0.5), or the reward shifted to be non-negative and normalised
(``baseline.rwr_weighting = normalized``). The update loop is :class:`rlsd.methods.supervised.SupervisedUpdate`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rwr_weights(rewards: Tensor, beta: float = 0.5, weighting: str = "exp") -> Tensor:
    """``(B,)`` float32 weights summing to 1.

    ``exp``: ``softmax(r / beta)``. ``normalized``: ``(r - min r) / sum(r - min r)`` (uniform when all rewards
    are equal).
    """
    r = rewards.detach().double().cpu()
    if weighting == "exp":
        if beta <= 0:
            raise ValueError(f"baseline.rwr_beta={beta} must be > 0 (paper: 0.5).")
        return torch.softmax(r / beta, dim=0).float()
    if weighting == "normalized":
        shifted = r - r.min()
        total = shifted.sum()
        return (shifted / total if total > 0 else torch.full_like(r, 1.0 / r.numel())).float()
    raise ValueError(f"baseline.rwr_weighting={weighting!r} must be exp or normalized.")
