"""Pieces of one RL iteration (paper Alg. 1) that need no accelerator: sampling a task's batch, scoring it,
choosing timesteps and the PPO loss of one micro-batch at one timestep.

Name map (paper -> code): ``x_t`` latents[:, j]; ``x_{t-1}`` latents[:, j + 1]; ``pi_old`` the recorded
``Trajectory.log_probs[:, j]``; ``A`` ``advantages``; ``epsilon`` ``clip_range``; ``K`` ``group_size``.

Global sample layout of one task: sample ``i`` belongs to prompt ``i // K`` (group id); rank ``r`` holds the
contiguous slice ``rlsd.distributed.local_slice(P * K, r, world)`` so groups never span ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rlsd.objective import ppo_clip_loss
from rlsd.sampling import Trajectory, rescore_step, sample_trajectories

# Stream tags for generators shared by all ranks (timestep choice, L_pre batches).
TIMESTEP_STREAM, PRETRAIN_STREAM = 11, 12


def shared_generator(seed: int, iteration: int, stream: int) -> torch.Generator:
    """CPU generator from (seed, stream, iteration): identical on every rank, independent of the world size."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(stream), int(iteration))).generate_state(1)
    gen = torch.Generator()
    gen.manual_seed(int(state[0]))
    return gen


def choose_timesteps(num_steps: int, k: int, generator: torch.Generator, stochastic: Tensor | None = None) -> list[int]:
    """``k`` distinct step indices j in [0, num_steps) (index into the trajectory, not the timestep value).

    ``stochastic``: optional ``(num_steps,)`` bool mask of the steps that may be drawn: std > 0, since a
    deterministic step has no log-density and no policy gradient, and std > ``train.min_step_std``.
    """
    order = torch.randperm(num_steps, generator=generator)
    if stochastic is not None:
        order = order[stochastic[order]]
    if len(order) < k:
        raise ValueError(f"train.timesteps_per_iter={k} but only {len(order)} of the {num_steps} sampling steps are "
                         "stochastic (std > train.min_step_std); lower train.timesteps_per_iter or "
                         "train.min_step_std, or raise sample.num_steps.")
    return order[:k].tolist()


def sample_slots(model, prompts: list[str], generators: list[torch.Generator], *, num_steps: int,
                 guidance_scale: float, eta: float, batch_size: int = 0) -> Trajectory:
    """Sample ``len(prompts)`` trajectories, sample i drawing all its noise from ``generators[i]``.

    A sample therefore does not depend on the other samples of its batch, so the global batch is the same
    for any number of ranks and any ``batch_size`` (samples per UNet micro-batch, 0 = all at once).
    """
    return sample_trajectories(model, list(prompts), generator=list(generators), num_steps=num_steps,
                               guidance_scale=guidance_scale, eta=eta, batch_size=batch_size)


@dataclass
class TaskBatch:
    """One task's sampled batch on this rank plus the global reward statistics.

    Attributes:
        trajectory: local ``Trajectory`` with ``B_local`` samples.
        advantages: ``(B_local,)`` float32 advantages (normalised over the global batch).
        rewards: ``(B_global,)`` float32 gathered rewards (for logging).
        info: reward diagnostics (local tensors ``(B_local,)`` or floats).
    """

    trajectory: Trajectory
    advantages: Tensor
    rewards: Tensor
    info: dict = field(default_factory=dict)


def check_finite_rewards(rewards: Tensor, reward_name: str, task_name: str) -> None:
    """Raise ValueError when any reward is NaN/inf, naming the reward and the task."""
    bad = int((~torch.isfinite(rewards)).sum())
    if bad:
        raise ValueError(f"reward {reward_name!r} of task {task_name!r} returned NaN/inf for {bad} of "
                         f"{rewards.numel()} samples; fix the reward (or its inputs) before training.")


def ppo_step_loss(model, traj: Trajectory, advantages: Tensor, j: int, rows: slice, *, guidance_scale: float,
                  eta: float, clip_range: float) -> tuple[Tensor, Tensor, Tensor]:
    """PPO-clip loss of rows ``rows`` of ``traj`` at step index ``j`` (with grad through ``model.unet``).

    Returns:
        (loss scalar, log_prob ``(b,)``, old_log_prob ``(b,)``).
    """
    out = rescore_step(
        model, traj.latents[rows, j], traj.latents[rows, j + 1], traj.timesteps[j],
        traj.prompt_embeds[rows], traj.negative_prompt_embeds[rows], guidance_scale=guidance_scale, eta=eta)
    old = traj.log_probs[rows, j].to(out.log_prob.device)
    ratio = torch.exp(out.log_prob - old)
    loss = ppo_clip_loss(advantages[rows].to(ratio.device), ratio, clip_range)
    return loss, out.log_prob.detach(), old
