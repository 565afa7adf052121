"""The update of the reward-gradient baselines (ReFL, DRaFT): one optimizer step on ``-mean reward``.

Per task: ``RLTrainer.collect`` samples and scores the global batch without grad (logged as
``reward/<task>/mean``, the same sampler as RL); then each rank rebuilds a differentiable ``x0`` of its slice
(:mod:`rlsd.methods.refl` or :mod:`rlsd.methods.draft`), decodes it, scores it with the differentiable reward
(:mod:`rlsd.methods.differentiable`), and backpropagates ``task.weight * -mean r`` (micro-batched by
``train.grad_accumulation``); one optimizer step per task. The ReFL step index and the DRaFT-LV noise are
drawn from ``(train.seed, iteration, task)`` for the global batch.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from rlsd import distributed as dist
from rlsd.iteration import shared_generator
from rlsd.methods.common import finish_iteration, reward_loss, reward_metrics, row_chunks
from rlsd.methods.differentiable import differentiable_reward
from rlsd.methods.draft import last_k_steps, last_stochastic_step, renoised_last_step
from rlsd.methods.options import refl_late_steps
from rlsd.methods.refl import predicted_x0, refl_step_index
from rlsd.sampling import guided_model_output

REWARD_GRADIENT_STREAM = 31


class RewardGradientUpdate:
    """``step(iteration) -> metrics`` of ReFL or DRaFT on ``trainer`` (an ``RLTrainer``)."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.method = trainer.cfg.train.method
        self.scorers = [differentiable_reward(r, f"tasks.{i}.reward", self.method)
                        for i, r in enumerate(trainer.rewards)]

    def __call__(self, iteration: int) -> dict[str, float]:
        tr, cfg = self.trainer, self.trainer.cfg
        tr._times, metrics, train_s, start = {}, {}, 0.0, time.perf_counter()
        losses, norms, images = [], [], None
        for i, task in enumerate(cfg.tasks):
            batch = tr.collect(i, iteration)
            images = batch.trajectory.images if images is None else images
            metrics.update(reward_metrics(tr, i, batch))
            t1 = time.perf_counter()
            gen = shared_generator(cfg.train.seed, iteration, REWARD_GRADIENT_STREAM + 100 * i)
            n_global = batch.rewards.numel()
            local = dist.local_slice(n_global, tr.rank, tr.world)
            rows = torch.arange(local.stop - local.start)
            total = 0.0
            chunks = row_chunks(rows, cfg.train.grad_accumulation)
            noise = self._lv_noise(gen, n_global, batch.trajectory.latents.shape[2:], local)
            j = -1
            if self.method == "refl":
                late = refl_late_steps(cfg.sample.num_steps, cfg.baseline.refl_late_fraction)
                j = refl_step_index(cfg.sample.num_steps, late, gen)
            for n, idx in enumerate(chunks):
                with tr._sync_context(last=n == len(chunks) - 1), tr._autocast():
                    rewards = self._differentiable_rewards(i, batch.trajectory, idx, j, noise)
                    loss = reward_loss(rewards) * task.weight * idx.numel() / rows.numel()
                    tr.accelerator.backward(loss)
                total += float(loss.detach())
            losses.append(total)
            norms.append(tr._optimizer_step())
            train_s += time.perf_counter() - t1
        means = torch.tensor([sum(losses) / len(losses), sum(norms) / len(norms)], dtype=torch.float64)
        means = dist.all_reduce_mean(tr.accelerator, means.to(tr.accelerator.device)).cpu()
        metrics[f"loss/{self.method}"], metrics[f"{self.method}/grad_norm"] = float(means[0]), float(means[1])
        return finish_iteration(tr, iteration, metrics, start, train_s, images)

    def _lv_noise(self, gen: torch.Generator, n: int, shape: tuple, local: slice) -> list[tuple]:
        """DRaFT-LV: ``draft_lv`` pairs of forward noise ``(B_local, C, H, W)`` and step noise
        ``(B_local, steps, C, H, W)``."""
        tr = self.trainer
        lv = tr.cfg.baseline.draft_lv if self.method == "draft" else 0
        steps = tr.cfg.sample.num_steps - last_stochastic_step(tr.model.scheduler, tr.cfg.sample.eta) if lv else 0
        pairs = [(torch.randn((n, *shape), generator=gen), torch.randn((n, steps, *shape), generator=gen))
                 for _ in range(lv)]
        return [(a[local], b[local]) for a, b in pairs]

    def _differentiable_rewards(self, task_index: int, traj: Any, idx: torch.Tensor, j: int, noise: list) -> torch.Tensor:
        """``(b,)`` differentiable rewards of rows ``idx`` (DRaFT-LV: the mean over the re-noised copies)."""
        tr, cfg = self.trainer, self.trainer.cfg
        gs, eta = cfg.sample.guidance_scale, cfg.sample.eta
        rows = idx.to(traj.latents.device)
        prompts = [traj.prompts[int(r)] for r in idx]
        if self.method == "refl":
            x = traj.latents[rows, j]
            eps = guided_model_output(tr.train_model, x, traj.timesteps[j].expand(idx.numel()), traj.prompt_embeds[rows],
                                      traj.negative_prompt_embeds[rows], gs)
            x0s = [predicted_x0(tr.model.scheduler, eps, x, traj.timesteps[j])]
        elif noise:
            x0s = [renoised_last_step(tr.train_model, traj, rows, a[idx], b[idx], guidance_scale=gs, eta=eta)
                   for a, b in noise]
        else:
            x0s = [last_k_steps(tr.train_model, traj, rows, cfg.baseline.draft_k, guidance_scale=gs, eta=eta)]
        scorer = self.scorers[task_index]
        return torch.stack([scorer(tr.model.decode(x0), prompts).float() for x0 in x0s]).mean(0)
