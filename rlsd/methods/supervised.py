"""The update of the supervised baselines (RAFT, RWR): weighted denoising loss on the model's own samples.

Per task: ``RLTrainer.collect`` samples and scores the global batch (the RL sampler, same prompts and noise);
the method turns the gathered rewards into weights over the global batch (:func:`rlsd.methods.raft.raft_weights`
or :func:`rlsd.methods.rwr.rwr_weights`, summing to 1); then ``train.inner_epochs`` optimizer steps train
``sum_i w_i ||target_i - unet(x0_i noised to t_i, t_i, c_i)||^2`` on the sampled final latents ``x0`` (the
recorded ``Trajectory.latents[:, -1]``), with fresh noise and timesteps ``t_i ~ U{0..T_train-1}`` drawn for the
global batch from ``(train.seed, iteration, epoch, task)``. Each rank trains its own slice; DDP averages, so
the local loss is scaled by the world size to give the global weighted sum.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from rlsd import distributed as dist
from rlsd.iteration import shared_generator
from rlsd.methods.common import finish_iteration, reward_metrics, row_chunks, weighted_denoising_loss
from rlsd.methods.raft import raft_weights
from rlsd.methods.rwr import rwr_weights
from rlsd.pretrain_data import denoising_target

#: stream tag of the denoising noise/timesteps (distinct from rlsd.iteration's streams)
SUPERVISED_STREAM = 21


class SupervisedUpdate:
    """``step(iteration) -> metrics`` of RAFT or RWR on ``trainer`` (an ``RLTrainer``)."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.method = trainer.cfg.train.method

    def weights(self, rewards: Tensor) -> Tensor:
        """``(B_global,)`` weights of the method, summing to 1."""
        base = self.trainer.cfg.baseline
        if self.method == "raft":
            return raft_weights(rewards, base.raft_accept_fraction)
        return rwr_weights(rewards, base.rwr_beta, base.rwr_weighting)

    def __call__(self, iteration: int) -> dict[str, float]:
        tr, cfg = self.trainer, self.trainer.cfg
        tr._times, metrics, train_s, start = {}, {}, 0.0, time.perf_counter()
        losses, norms, images = [], [], None
        for i, task in enumerate(cfg.tasks):
            batch = tr.collect(i, iteration)
            images = batch.trajectory.images if images is None else images
            metrics.update(reward_metrics(tr, i, batch))
            t1 = time.perf_counter()
            weights = self.weights(batch.rewards)
            local = dist.local_slice(weights.numel(), tr.rank, tr.world)
            metrics[f"{self.method}/{task.name}/weighted_reward"] = float((weights * batch.rewards).sum())
            metrics[f"{self.method}/{task.name}/effective_samples"] = float(1.0 / weights.double().pow(2).sum())
            for epoch in range(cfg.train.inner_epochs):
                gen = shared_generator(cfg.train.seed, iteration * cfg.train.inner_epochs + epoch,
                                       SUPERVISED_STREAM + 100 * i)
                x0 = batch.trajectory.latents[:, -1]
                noise = torch.randn((weights.numel(), *x0.shape[1:]), generator=gen)
                timesteps = torch.randint(tr.model.scheduler.config.num_train_timesteps, (weights.numel(),),
                                          generator=gen)
                loss = self.denoising_step(batch.trajectory, weights[local] * tr.world, noise[local],
                                           timesteps[local], task.weight)
                losses.append(loss)
                norms.append(tr._optimizer_step())
            train_s += time.perf_counter() - t1
        means = torch.tensor([sum(losses) / len(losses), sum(norms) / len(norms)], dtype=torch.float64)
        means = dist.all_reduce_mean(tr.accelerator, means.to(tr.accelerator.device)).cpu()
        metrics[f"loss/{self.method}"], metrics[f"{self.method}/grad_norm"] = float(means[0]), float(means[1])
        return finish_iteration(tr, iteration, metrics, start, train_s, images)

    def denoising_step(self, traj: Any, weights: Tensor, noise: Tensor, timesteps: Tensor, scale: float) -> float:
        """Backward of ``scale * weighted_denoising_loss`` on this rank's samples with non-zero weight.

        A rank without such a sample still runs one zero-weight row, so every DDP rank joins the all-reduce.
        Returns the local loss value.
        """
        tr = self.trainer
        rows = torch.nonzero(weights > 0).flatten()
        rows = rows if rows.numel() else torch.zeros(1, dtype=torch.long)
        scheduler, total = tr.model.scheduler, 0.0
        chunks = row_chunks(rows, tr.cfg.train.grad_accumulation)
        for n, idx in enumerate(chunks):
            device = traj.latents.device
            x0 = traj.latents[idx.to(device), -1].float()
            eps, t = noise[idx].to(x0.device), timesteps[idx].to(x0.device)
            noisy = scheduler.add_noise(x0, eps, t)
            target = denoising_target(scheduler, x0, eps, t)
            with tr._sync_context(last=n == len(chunks) - 1), tr._autocast():
                dtype = next(tr.unet.parameters()).dtype
                embeds = traj.prompt_embeds[idx.to(device)].to(dtype)
                pred = tr.unet(noisy.to(dtype), t, encoder_hidden_states=embeds).sample
                loss = weighted_denoising_loss(pred, target, weights[idx]) * scale
                tr.accelerator.backward(loss)
            total += float(loss.detach())
        return total
