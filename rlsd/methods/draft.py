"""DRaFT (Clark et al. 2024, "Directly fine-tuning diffusion models on differentiable rewards").

``DRaFT-K`` (``baseline.draft_k = K``, ``draft_lv = 0``): the sampling chain is re-run with grad over its last
K steps from the recorded ``x_{t_{T-K}}``, each step reparameterised with its recorded noise
(``x_{t-1} = mean_theta(x_t) + sigma_t z``, ``z`` fixed), so the value equals the sampled trajectory and the
gradient flows through the K means. Earlier steps are treated as constants (stop-gradient).

``DRaFT-LV`` (``draft_lv = n > 0``, K = 1): the final sample ``x0`` is re-noised ``n`` times to the last
stochastic sampling timestep (``q(x_{t_1} | x0)``) and each copy denoised with grad; the loss averages the n
rewards (a lower-variance estimate of the last step's reward gradient). A schedule whose final step is the
deterministic ``t = 0`` step (ShapesWorld: ``steps_offset = 0``, ``alphas_cumprod[0] = 1 - 1e-8``, so the step
carries no gradient) re-noises to the step before it and denoises through both.

The paper trains LoRA adapters (``model.use_lora``, rank 32; ``configs/sd2_draft.yaml``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlsd.sampling import ddim_step_with_logprob, guided_model_output, step_stds


def reparameterized(mean: Tensor, recorded: Tensor) -> Tensor:
    """``recorded + (mean - mean.detach())``: the value of the recorded sample, the gradient of ``mean``.

    Exact for a Gaussian step ``x = mean + sigma z`` whose ``sigma`` and ``z`` do not depend on the weights.
    """
    return recorded.detach().to(mean.dtype) + (mean - mean.detach())


def last_k_steps(model: Any, traj: Any, rows: Tensor, k: int, *, guidance_scale: float, eta: float) -> Tensor:
    """``x0`` ``(b, C, H, W)`` of ``traj`` rows ``rows``, differentiable through the UNet on the last ``k`` steps."""
    num_steps = traj.timesteps.numel()
    x = traj.latents[rows, num_steps - k].float()
    embeds, negative = traj.prompt_embeds[rows], traj.negative_prompt_embeds[rows]
    for j in range(num_steps - k, num_steps):
        t = traj.timesteps[j].expand(rows.numel())
        eps = guided_model_output(model, x.to(traj.latents.dtype), t, embeds, negative, guidance_scale)
        out = ddim_step_with_logprob(model.scheduler, eps, t, x, eta=eta, prev_sample=traj.latents[rows, j + 1])
        x = reparameterized(out.mean, traj.latents[rows, j + 1].float())
    return x


def last_stochastic_step(scheduler, eta: float) -> int:
    """Index of the last sampling step with std > 0 (the final step of a schedule ending at t = 0 is a no-op)."""
    stochastic = torch.nonzero(step_stds(scheduler, eta) > 0).flatten()
    if stochastic.numel() == 0:
        raise ValueError("DRaFT-LV needs a stochastic sampling step; set sample.eta > 0.")
    return int(stochastic[-1])


def renoised_last_step(model: Any, traj: Any, rows: Tensor, noise: Tensor, step_noise: Tensor, *,
                       guidance_scale: float, eta: float) -> Tensor:
    """DRaFT-LV copy: ``x0`` of ``rows`` re-noised to the last stochastic timestep, then denoised with grad.

    ``noise``: ``(b, C, H, W)`` forward-process noise; ``step_noise``: ``(b, steps, C, H, W)``, one standard normal
    per remaining step (1 step, or 2 when the schedule ends with a deterministic step at t = 0).
    """
    j0 = last_stochastic_step(model.scheduler, eta)
    x0 = traj.latents[rows, -1].float()
    device = x0.device
    x = model.scheduler.add_noise(x0, noise.to(device), traj.timesteps[j0].expand(rows.numel()).to(device))
    for n, j in enumerate(range(j0, traj.timesteps.numel())):
        t = traj.timesteps[j].expand(rows.numel())
        eps = guided_model_output(model, x.to(traj.latents.dtype), t, traj.prompt_embeds[rows],
                                  traj.negative_prompt_embeds[rows], guidance_scale)
        out = ddim_step_with_logprob(model.scheduler, eps, t, x, eta=eta, prev_sample=x.detach())
        x = out.mean + out.std * step_noise[:, n].to(device)
    return x
