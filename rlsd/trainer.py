"""RLTrainer: large-scale policy-gradient fine-tuning of a diffusion model (paper Alg. 1) on accelerate.

One iteration:

1. per task: draw ``P`` global prompts -> this rank samples its slice of the ``P * K`` samples, each from
   its own slot generator (``rlsd.distributed.slot_generators``) -> rewards on the local images (groups of
   K never span ranks) -> gather rewards -> ``normalize_advantages`` over the global batch -> local slice;
2. ``train.timesteps_per_iter`` random step indices (same on every rank and task): for each, re-score the
   local batch at that step, PPO-clip loss (weighted by ``task.weight``), backward, clip, optimizer step.
   With ``train.task_updates = per_task`` (paper) steps 1-2 run task after task, so each task is sampled by
   the policy the previous task's update left; with ``summed`` every task is sampled first and each
   optimizer step sums all tasks' losses (``train.clip_per_task``: each task's gradient clipped to its weight's
   share before the sum). The first re-scoring after sampling must give ratio == 1 (the
   largest deviation over tasks and ranks is logged as ``ppo/ratio_first_abs_dev``);
3. optionally the L_pre denoising step (weight ``pretrain.beta``) with its own optimizer step.

Everything random derives from ``(train.seed, iteration)``; with checkpointed optimizer, prompt-source and
dataset positions a resumed run continues exactly like an uninterrupted one.

Faults: before every optimizer step the loss, learning rate, gradients and weights must be finite on every
rank, and before every checkpoint the weights (``rlsd.guards``; otherwise all ranks raise ValueError). SIGTERM
or SIGINT on any rank stops all ranks after the current iteration with a checkpoint (``TrainingStopped``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm  # plain tqdm: tqdm.auto needs ipywidgets in notebooks

from rlsd import distributed as dist
from rlsd import guards
from rlsd.config import RLConfig
from rlsd.iteration import (PRETRAIN_STREAM, TIMESTEP_STREAM, TaskBatch, check_finite_rewards, choose_timesteps,
                            ppo_step_loss, sample_slots, shared_generator)
from rlsd.methods import build_method
from rlsd.objective import PerPromptStatTracker, normalize_advantages, ppo_diagnostics
from rlsd.pretrain_data import build_pretrain_source, denoising_loss, model_image_size
from rlsd.sampling import step_stds
from rlsd.trainer_setup import (build_optimizer, export_policy, load_policy, make_accelerator,
                                trainable_parameters)

RATIO_TOLERANCE = 1e-4
#: accelerate backends whose parameters do not hold the full gradient in .grad (no train.clip_per_task)
SHARDED_BACKENDS = ("DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA")


class RLTrainer:
    """Owns the model, optimizer, prompt sources, rewards and logger of one run (see module docstring)."""

    def __init__(self, cfg: RLConfig, accelerator: Any | None = None):
        from rlsd.prompts import build_prompt_source
        from rlsd.rewards import build_reward

        self.cfg = cfg
        self.accelerator = accelerator if accelerator is not None else make_accelerator(cfg)
        self.rank, self.world = dist.rank_and_world(self.accelerator)
        cfg.validate(world_size=self.world)
        backend = str(getattr(self.accelerator, "distributed_type", "")).rsplit(".", 1)[-1]
        if cfg.train.clip_per_task and backend in SHARDED_BACKENDS:
            raise ValueError(f"train.clip_per_task=true reads each task's full gradient from .grad, which {backend} "
                             "shards (tested: one process and DDP). Use a DDP accelerate config, or set "
                             "train.clip_per_task=false.")
        self.is_main = dist.is_main_process(self.accelerator)
        torch.manual_seed(cfg.train.seed)
        self.model = load_policy(cfg.model, seed=cfg.train.seed, device=self.accelerator.device)
        self.model.scheduler.set_timesteps(cfg.sample.num_steps)
        # (T,) steps the policy gradient may train: a density (std > 0) and std above train.min_step_std
        self._stochastic = step_stds(self.model.scheduler, cfg.sample.eta) > cfg.train.min_step_std
        self.params = trainable_parameters(self.model.unet)
        optimizer, self.lr_scheduler = build_optimizer(self.params, cfg.train)
        self.unet, self.optimizer = self.accelerator.prepare(self.model.unet, optimizer)
        self.train_model = dataclasses.replace(self.model, unet=self.unet)  # DDP-wrapped UNet for gradients
        self.prompt_sources = [build_prompt_source(t.prompts) for t in cfg.tasks]
        self.rewards = [build_reward(t.reward) for t in cfg.tasks]
        self.trackers = [PerPromptStatTracker() for _ in cfg.tasks]
        self.pretrain = (build_pretrain_source(cfg.pretrain.dataset, model_image_size(self.model), cfg.train.seed)
                         if cfg.pretrain.enabled else None)
        self.eval_rewards = {r.name: r for r in map(build_reward, cfg.eval.rewards)}
        self.iteration = 0
        self._step_iteration = 0  # the iteration step() runs (named by the non-finite guard)
        self.logger: Any = None  # RunLogger, opened by train()
        self._times: dict[str, float] = {}
        self.method = build_method(self)  # None for train.method rl / ddpo (the PPO step below); see rlsd.methods

    # ----------------------------------------------------------------------------------------- sampling
    def _autocast(self) -> Any:
        return self.accelerator.autocast() if self.cfg.train.mixed_precision != "no" else contextlib.nullcontext()

    def collect(self, task_index: int, iteration: int) -> TaskBatch:
        """Sample, score and normalise one task's batch; returns this rank's share (see ``TaskBatch``)."""
        cfg, task = self.cfg, self.cfg.tasks[task_index]
        k, n_prompts = task.group_size, cfg.task_prompts(task_index)
        prompts = self.prompt_sources[task_index].next_batch(n_prompts)  # same global prompts on every rank
        local = dist.local_slice(n_prompts * k, self.rank, self.world, name=f"tasks.{task_index}.num_prompts")
        offset = sum(cfg.task_samples(i) for i in range(task_index))
        gens = dist.slot_generators(cfg.train.seed, iteration, range(offset + local.start, offset + local.stop))
        local_prompts = [prompts[i // k] for i in range(local.start, local.stop)]
        t0 = time.perf_counter()
        with self._autocast():
            traj = sample_slots(self.model, local_prompts, gens, num_steps=cfg.sample.num_steps,
                                guidance_scale=cfg.sample.guidance_scale, eta=cfg.sample.eta,
                                batch_size=cfg.sample.batch_size)
        t1 = time.perf_counter()
        metadata = [{"group": i // k, "prompt": prompts[i // k]} for i in range(local.start, local.stop)]
        rewards, info = self.rewards[task_index](traj.images, local_prompts, metadata)
        self._times["sample"] = self._times.get("sample", 0.0) + t1 - t0
        self._times["reward"] = self._times.get("reward", 0.0) + time.perf_counter() - t1
        rewards_all = dist.gather_tensor(self.accelerator, rewards.to(self.accelerator.device)).float().cpu()
        check_finite_rewards(rewards_all, self.rewards[task_index].name, task.name)
        group_ids = torch.arange(n_prompts * k) // k
        advantages = normalize_advantages(
            rewards_all, mode=cfg.task_advantage_mode(task_index), group_ids=group_ids,
            prompts=[prompts[i // k] for i in range(n_prompts * k)], tracker=self.trackers[task_index],
            clip=cfg.train.adv_clip)
        return TaskBatch(traj, advantages[local], rewards_all, info)

    # ----------------------------------------------------------------------------------------- training
    def _sync_context(self, last: bool) -> Any:
        """Skip DDP's gradient all-reduce on all but the last backward before an optimizer step."""
        if last or self.world == 1 or not isinstance(self.unet, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.unet.no_sync()

    def _optimizer_step(self, loss: float | None = None, task: str | None = None) -> float:
        """Check, clip gradients, step, zero; returns the pre-clip global grad norm (0 if clipping is off).

        First the loss (if given), lr, gradients and weights must be finite on every rank, else ValueError on all
        ranks naming the iteration and ``task`` (default: all tasks; an fp16 loss scaler handles overflowing
        gradients itself)."""
        task = task or "+".join(t.name for t in self.cfg.tasks)
        lr, scaled = float(self.optimizer.param_groups[0]["lr"]), getattr(self.accelerator, "scaler", None) is not None
        dist.check_on_all_ranks(self.accelerator, lambda: guards.check_finite_step(
            self.params, loss, iteration=self._step_iteration, task=task, lr=lr, grads=not scaled))
        norm = 0.0
        if self.cfg.train.max_grad_norm > 0:
            norm = float(self.accelerator.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def policy_step(self, batches: list[TaskBatch], j: int, tasks: list[int]) -> dict[str, float]:
        """One optimizer step on the local batches of ``tasks`` (``batches[i]`` is task ``tasks[i]``) at step ``j``."""
        cfg = self.cfg
        per_task_clip = cfg.train.clip_per_task and len(batches) > 1
        pieces = [(bi, rows) for bi, b in enumerate(batches)
                  for rows in _chunks(len(b.trajectory.prompts), cfg.train.grad_accumulation)]
        log_probs, olds, loss_sum, summed, task_norms = [], [], 0.0, None, {}
        for n, (bi, rows) in enumerate(pieces):
            batch, task = batches[bi], cfg.tasks[tasks[bi]]
            size = len(batch.trajectory.prompts)
            task_done = n == len(pieces) - 1 or pieces[n + 1][0] != bi
            with self._sync_context(last=task_done if per_task_clip else n == len(pieces) - 1), self._autocast():
                loss, log_prob, old = ppo_step_loss(
                    self.train_model, batch.trajectory, batch.advantages, j, rows,
                    guidance_scale=cfg.sample.guidance_scale, eta=cfg.sample.eta, clip_range=cfg.train.clip_range)
                loss = loss * task.weight * (rows.stop - rows.start) / size
                self.accelerator.backward(loss)
            loss_sum += float(loss.detach())
            log_probs.append(log_prob.float())
            olds.append(old.float())
            if per_task_clip and task_done:
                task_norms[task.name], summed = self._clip_into(summed, task.weight * cfg.train.max_grad_norm)
        if summed is not None:
            for p, g in zip(self.params, summed):
                p.grad = g
        log_prob, old = torch.cat(log_probs), torch.cat(olds)
        stats = ppo_diagnostics(log_prob, old, cfg.train.clip_range)
        stats["ratio_abs_dev"] = float((log_prob - old).double().exp().sub(1).abs().max())
        stats["loss"] = loss_sum
        stats.update({f"grad_norm/{name}": norm for name, norm in task_norms.items()})
        stats["grad_norm"] = self._optimizer_step(loss_sum, "+".join(cfg.tasks[i].name for i in tasks))
        return stats

    def _clip_into(self, summed: list[torch.Tensor] | None, max_norm: float) -> tuple[float, list[torch.Tensor]]:
        """Clip the gradients now in ``.grad`` to ``max_norm``, add them to ``summed`` and zero ``.grad``.

        Returns the pre-clip norm and the running sum (one tensor per trainable parameter).
        """
        norm = float(self.accelerator.clip_grad_norm_(self.params, max_norm))  # max_norm 0 (weight 0): zeros
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        summed = [g.clone() for g in grads] if summed is None else [s.add_(g) for s, g in zip(summed, grads)]
        self.optimizer.zero_grad(set_to_none=True)
        return norm, summed

    def policy_updates(self, batches: list[TaskBatch], tasks: list[int], iteration: int) -> list[dict[str, float]]:
        """``train.inner_epochs`` x ``train.timesteps_per_iter`` optimizer steps on ``batches`` (of ``tasks``).

        The step indices depend on ``(train.seed, iteration, epoch)`` only, so every task of an iteration
        trains at the same timesteps.
        """
        cfg, stats = self.cfg, []
        for epoch in range(cfg.train.inner_epochs):
            gen = shared_generator(cfg.train.seed, iteration * cfg.train.inner_epochs + epoch, TIMESTEP_STREAM)
            for j in choose_timesteps(cfg.sample.num_steps, cfg.train.timesteps_per_iter, gen, self._stochastic):
                stats.append(self.policy_step(batches, j, tasks))
        return stats

    def pretrain_step(self, iteration: int) -> dict[str, float]:
        """L_pre: beta * denoising loss on this rank's share of a global image-caption batch, then a step."""
        n = self.cfg.pretrain.batch_size
        images, captions = self.pretrain.next_batch(n, rank=self.rank, world_size=self.world)  # this rank's share
        gen = shared_generator(self.cfg.train.seed, iteration, PRETRAIN_STREAM)
        size = self.model.sample_size
        timesteps = torch.randint(self.model.scheduler.config.num_train_timesteps, (n,), generator=gen)
        noise = torch.randn((n, self.model.latent_channels, size, size), generator=gen)
        local = dist.local_slice(n, self.rank, self.world, name="pretrain.batch_size")
        vae_gen = dist.rank_generator(self.cfg.train.seed, iteration, self.rank)
        with self._autocast():
            loss = denoising_loss(self.model, images, captions, vae_gen, noise=noise[local],
                                  timesteps=timesteps[local], unet=self.unet)
            self.accelerator.backward(loss * self.cfg.pretrain.beta)
        value = float(loss.detach())
        return {"loss/pretrain": value, "pretrain/grad_norm": self._optimizer_step(value, "pretrain (L_pre)")}

    def step(self, iteration: int) -> dict[str, float]:
        """One full RL iteration; returns its metrics (identical on every rank)."""
        self._step_iteration = iteration
        if self.method is not None:  # a baseline method's iteration (rlsd.methods)
            return self.method(iteration)
        cfg, metrics = self.cfg, {}
        self._times = times = {}
        t0 = time.perf_counter()
        rounds = ([list(range(len(cfg.tasks)))] if cfg.train.task_updates == "summed"
                  else [[i] for i in range(len(cfg.tasks))])
        batches, step_stats, first_devs, train_s = [], [], [], 0.0
        for tasks in rounds:  # summed: one round of all tasks; per_task: one round per task
            round_batches = [self.collect(i, iteration) for i in tasks]
            batches += round_batches
            t1 = time.perf_counter()
            round_stats = self.policy_updates(round_batches, tasks, iteration)
            train_s += time.perf_counter() - t1
            first_devs.append(round_stats[0]["ratio_abs_dev"])
            step_stats += round_stats
        for task, batch in zip(cfg.tasks, batches):
            metrics[f"reward/{task.name}/mean"] = float(batch.rewards.mean())
            metrics[f"reward/{task.name}/std"] = float(batch.rewards.std()) if batch.rewards.numel() > 1 else 0.0
        first_dev = dist.all_reduce_max(self.accelerator, torch.tensor([max(first_devs)],  # the worst rank
                                                                      device=self.accelerator.device))
        metrics["ppo/ratio_first_abs_dev"] = float(first_dev)
        if metrics["ppo/ratio_first_abs_dev"] > RATIO_TOLERANCE:
            warnings.warn(f"iteration {iteration}: first re-scored ratio deviates from 1 by "
                          f"{metrics['ppo/ratio_first_abs_dev']:.3g} (> {RATIO_TOLERANCE}); sampling and re-scoring "
                          "disagree (check mixed precision / nondeterministic kernels).", stacklevel=2)
        keys = [k for k in step_stats[0] if k != "ratio_abs_dev"]
        means = torch.tensor([sum(s[k] for s in step_stats) / len(step_stats) for k in keys], dtype=torch.float64)
        means = dist.all_reduce_mean(self.accelerator, means.to(self.accelerator.device)).cpu()  # rank average
        metrics.update({("loss/ppo" if k == "loss" else f"ppo/{k}"): float(v) for k, v in zip(keys, means)})
        times["train"] = train_s
        if self.pretrain is not None:
            t2 = time.perf_counter()
            metrics.update(self.pretrain_step(iteration))
            times["pretrain"] = time.perf_counter() - t2
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.lr_scheduler.step()
        total = time.perf_counter() - t0
        num_samples = sum(cfg.task_samples(i) for i in range(len(cfg.tasks)))
        metrics["perf/samples_per_s"] = num_samples / total
        metrics.update({f"time/{k}_s": v for k, v in times.items()})
        self._last_images = batches[0].trajectory.images
        return metrics

    # ------------------------------------------------------------------------------ loop, eval, checkpoint
    def train(self, resume: str | Path | None = None) -> dict[str, float]:
        """Run until ``train.iterations``; ``resume`` = checkpoint folder or "auto" (latest intact in run_dir).

        Raises ``rlsd.guards.TrainingStopped`` on every rank after SIGTERM / SIGINT reached any rank: the
        iteration running then is finished and checkpointed first (no export).
        """
        from rlsd.checkpoint import list_checkpoints, remove_stale_writes
        from rlsd.recording import RunLogger
        from rlsd.trainer_state import load_trainer_state

        cfg, metrics, stop = self.cfg, {}, False
        removed = remove_stale_writes(cfg.log.run_dir) if self.is_main else []  # before any rank looks for one
        if removed:
            warnings.warn(f"removed {len(removed)} unfinished checkpoint write(s) of a killed run: "
                          f"{', '.join(p.name for p in removed)}", stacklevel=2)
        dist.wait_for_everyone(self.accelerator)
        if resume is not None:
            load_trainer_state(self, resume)
        elif self.is_main and list_checkpoints(cfg.log.run_dir):
            warnings.warn(f"log.run_dir {cfg.log.run_dir} already holds checkpoints; starting fresh (metrics after "
                          f"iteration {self.iteration} are dropped). Pass --resume auto to continue instead.",
                          stacklevel=2)
        self.logger = RunLogger(cfg.log.run_dir, enabled=self.is_main, config=cfg.to_dict(),
                                resume_step=self.iteration)  # drops stale rows of an earlier run after this point
        bar = tqdm(range(self.iteration, cfg.train.iterations), disable=not (self.is_main and cfg.log.progress),
                   desc="rl iterations")
        with guards.StopSignals() as signals:
            for it in bar:
                metrics = self._iterate(it)
                # every rank, every iteration: one scalar all-reduce, so all ranks stop after the same iteration
                stop = dist.any_rank(self.accelerator, signals.received is not None)
                stop = stop and self.iteration < cfg.train.iterations  # a stop after the last one just finishes
                if stop or self.iteration == cfg.train.iterations \
                        or cfg.log.checkpoint_every and self.iteration % cfg.log.checkpoint_every == 0:
                    path = self.save_checkpoint()
                bar.set_postfix({k.split("/")[1]: round(v, 3) for k, v in metrics.items() if k.endswith("/mean")})
                if stop:
                    break
        dist.wait_for_everyone(self.accelerator)
        if self.is_main and cfg.log.export and not stop:
            export_policy(self.model, Path(cfg.log.run_dir) / "export")
        self.logger.close()
        dist.wait_for_everyone(self.accelerator)
        if stop:
            raise guards.TrainingStopped(signals.name or "a stop signal (on another rank)", self.iteration, path)
        return metrics

    def _iterate(self, it: int) -> dict[str, float]:
        """Iteration ``it`` (0-based) plus its evaluation and logging; leaves ``self.iteration = it + 1``."""
        cfg = self.cfg
        metrics = self.step(it)
        self.iteration = it + 1
        if cfg.eval.every and (self.iteration % cfg.eval.every == 0 or self.iteration == cfg.train.iterations):
            t_eval = time.perf_counter()
            metrics.update(self.evaluate())
            metrics["time/eval_s"] = time.perf_counter() - t_eval
        self._log(metrics, it)
        return metrics

    def save_checkpoint(self) -> Path:
        """Checkpoint the state after ``self.iteration`` iterations; refuses NaN/inf weights (on every rank)."""
        from rlsd.trainer_state import save_trainer_state

        named = {n: p for n, p in self.accelerator.unwrap_model(self.unet).named_parameters() if p.requires_grad}
        dist.check_on_all_ranks(self.accelerator, lambda: guards.check_finite_weights(named, self.iteration))
        return save_trainer_state(self)

    def evaluate(self) -> dict[str, float]:
        """Held-out evaluation on the main process (fixed prompts and seeds); metrics under ``eval/``."""
        from rlsd.evaluation import evaluate

        out: dict[str, float] = {}
        if self.is_main and self.cfg.eval.prompts:
            with self._autocast():
                result = evaluate(self.model, list(self.cfg.eval.prompts), list(self.cfg.eval.seeds),
                                  self.eval_rewards, num_steps=self.cfg.sample.num_steps,
                                  guidance_scale=self.cfg.sample.guidance_scale, eta=self.cfg.sample.eta)
            out = {f"eval/{k}": v for k, v in result.summary.items()}
            self._eval_images = result.images
        dist.wait_for_everyone(self.accelerator)
        return out

    def _log(self, metrics: dict[str, float], it: int) -> None:
        if self.logger is None:
            return
        if it % self.cfg.log.log_every == 0 or self.iteration == self.cfg.train.iterations:
            self.logger.log_scalars(self.iteration, metrics)
        every = self.cfg.log.image_every
        if every and (self.iteration % every == 0 or self.iteration == self.cfg.train.iterations):
            self.logger.log_images(self.iteration, self._last_images, tag="samples/train")
            if getattr(self, "_eval_images", None) is not None:
                self.logger.log_images(self.iteration, self._eval_images, tag="samples/eval")


def _chunks(n: int, parts: int) -> list[slice]:
    """Split ``range(n)`` into ``min(parts, n)`` contiguous, near-equal slices."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

