"""ReFL (Xu et al. 2023, ImageReward paper, Alg. 2): the reward gradient through the predicted x0 at a late step.

One iteration per task: sample the batch without grad (the RL sampler), draw one step index ``j`` uniformly
among the last ``baseline.refl_late_fraction`` of the ``sample.num_steps`` (the same for the whole global batch),
evaluate the UNet with grad at the recorded ``x_{t_j}``, predict ``x0`` directly from it, decode, and minimise
``-mean reward(x0_hat)`` (:func:`rlsd.methods.common.reward_loss`). ``x0_hat`` keeps the graph through one UNet
call only, as in ReFL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlsd.sampling import _alphas, _pred_x0_eps


def refl_step_index(num_steps: int, last_steps: int, generator: torch.Generator) -> int:
    """Step index ``j`` in ``[num_steps - last_steps, num_steps)`` (an index into the trajectory)."""
    if not 1 <= last_steps <= num_steps:
        raise ValueError(f"ReFL draws its step among the last {last_steps} of {num_steps} steps; raise "
                         "baseline.refl_late_fraction or sample.num_steps.")
    return num_steps - last_steps + int(torch.randint(last_steps, (1,), generator=generator))


def predicted_x0(scheduler, model_output: Tensor, sample: Tensor, timestep: int | Tensor) -> Tensor:
    """``x0_hat`` ``(B, C, H, W)`` float32 of the scheduler's prediction type at ``timestep`` (with grad)."""
    t = torch.as_tensor(timestep).detach().to("cpu", torch.long).expand(sample.shape[0])
    a_t, _ = _alphas(scheduler, t)
    x0, _ = _pred_x0_eps(scheduler, model_output.float(), sample.float(), a_t.to(sample.device).view(-1, 1, 1, 1))
    return x0
