"""Phase timers for one ``RLTrainer.step``: where an rlsd iteration spends its time.

Wraps, for one call only, the trainer's sampling call, its reward functions, the re-scoring forward
(``ppo_step_loss``), ``accelerator.backward`` and the optimizer step (clip + step + zero), and times every
UNet forward by the phase it runs in. ``other`` is the iteration's wall time minus the phases. The UNet's
backward is the ``backward`` phase (the loss graph past the UNet output is a few element-wise ops).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable

import rlsd.trainer as trainer_module


def _timing(fn: Callable, sink: dict, key: str, phase: dict | None = None) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        previous = phase["name"] if phase is not None else None
        if phase is not None:
            phase["name"] = key
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink[key] += time.perf_counter() - start
            if phase is not None:
                phase["name"] = previous
    return wrapped


@contextmanager
def _patched(obj: Any, name: str, value: Any):
    had = name in vars(obj)
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


def profile_step(trainer: Any, iteration: int) -> tuple[dict, dict]:
    """Run ``trainer.step(iteration)`` under phase timers; returns (its metrics, seconds per phase)."""
    phases: dict[str, float] = defaultdict(float)
    unet: dict[str, float] = defaultdict(float)
    current = {"name": "other"}
    unets = {id(m): m for m in (trainer.model.unet, getattr(trainer.unet, "module", trainer.unet))}

    def unet_forward(module: Any) -> Callable:
        forward = module.forward

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return forward(*args, **kwargs)
            finally:
                unet[f"unet_forward_in_{current['name']}"] += time.perf_counter() - start
        return wrapped

    patches = [(trainer_module, "sample_slots", _timing(trainer_module.sample_slots, phases, "sampling", current)),
               (trainer_module, "ppo_step_loss",
                _timing(trainer_module.ppo_step_loss, phases, "rescoring_forward", current)),
               (trainer.accelerator, "backward", _timing(trainer.accelerator.backward, phases, "backward", current)),
               (trainer, "_optimizer_step", _timing(trainer._optimizer_step, phases, "optimizer", current))]
    patches += [(m, "forward", unet_forward(m)) for m in unets.values()]
    rewards = trainer.rewards
    trainer.rewards = [_TimedReward(r, _timing(r, phases, "reward", current)) for r in rewards]
    start = time.perf_counter()
    try:
        with _nested(patches):
            metrics = trainer.step(iteration)
    finally:
        trainer.rewards = rewards
    total = time.perf_counter() - start
    phases["other"] = total - sum(phases.values())
    unet_total = sum(unet.values()) + phases["backward"]
    out = {"total_s": total, "phases_s": dict(phases), "share": {k: v / total for k, v in phases.items()},
           "unet_s": dict(unet), "unet_forward_and_backward_share": unet_total / total,
           "outside_unet_share": 1 - unet_total / total}
    return metrics, out


class _TimedReward:
    """A reward whose calls go through a timer; every other attribute is the reward's own."""

    def __init__(self, reward: Any, call: Callable):
        self._reward, self._call = reward, call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reward, name)


@contextmanager
def _nested(patches: list[tuple[Any, str, Any]]):
    if not patches:
        yield
        return
    obj, name, value = patches[0]
    with _patched(obj, name, value), _nested(patches[1:]):
        yield
