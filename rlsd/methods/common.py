"""Losses and bookkeeping shared by the baseline methods (the losses are torch-only)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor


def weighted_denoising_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``sum_i w_i * mean((pred_i - target_i)^2)``: the diffusion loss with one weight per sample.

    Args:
        pred, target: ``(B, C, H, W)`` denoiser output and its regression target (eps or v).
        weights: ``(B,)`` constants (detached); weights summing to 1 give a weighted mean.
    """
    if pred.shape != target.shape or weights.shape != pred.shape[:1]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and weights "
                         f"{tuple(weights.shape)} must share the batch; pass one weight per sample.")
    per_sample = (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))
    return (weights.detach().to(per_sample) * per_sample).sum()


def reward_loss(rewards: Tensor) -> Tensor:
    """``-mean(r)``: the loss whose gradient is the reward gradient (ReFL, DRaFT); rewards ``(B,)`` with grad."""
    return -rewards.float().mean()


def row_chunks(rows: Tensor, parts: int) -> list[Tensor]:
    """Split the index tensor ``rows`` into ``min(parts, len(rows))`` contiguous chunks (micro-batches)."""
    return list(torch.tensor_split(rows, max(1, min(parts, rows.numel()))))


def reward_metrics(trainer: Any, task_index: int, batch: Any) -> dict[str, float]:
    """``reward/<task>/mean`` and ``/std`` of a ``TaskBatch`` (the gathered global rewards)."""
    name, r = trainer.cfg.tasks[task_index].name, batch.rewards
    return {f"reward/{name}/mean": float(r.mean()), f"reward/{name}/std": float(r.std()) if r.numel() > 1 else 0.0}


def finish_iteration(trainer: Any, iteration: int, metrics: dict[str, float], start: float, train_s: float,
                     images: Tensor) -> dict[str, float]:
    """The trainer's end of an iteration: optional L_pre step, lr, schedule, throughput and timing metrics."""
    cfg, times = trainer.cfg, trainer._times
    times["train"] = train_s
    if trainer.pretrain is not None:
        t = time.perf_counter()
        metrics.update(trainer.pretrain_step(iteration))
        times["pretrain"] = time.perf_counter() - t
    metrics["lr"] = trainer.optimizer.param_groups[0]["lr"]
    trainer.lr_scheduler.step()
    num_samples = sum(cfg.task_samples(i) for i in range(len(cfg.tasks)))
    metrics["perf/samples_per_s"] = num_samples / (time.perf_counter() - start)
    metrics.update({f"time/{k}_s": v for k, v in times.items()})
    trainer._last_images = images
    return metrics
