"""Baseline fine-tuning methods in the RL trainer's framework, chosen by ``train.method``.

===========  ==========================================================================  =====================
method       one iteration (per task)                                                    module
===========  ==========================================================================  =====================
``rl``       the paper's PPO update + L_pre (:class:`rlsd.trainer.RLTrainer` itself)      rlsd.trainer
``ddpo``     the same PPO update with DDPO's per-prompt advantages (validated)            rlsd.trainer
``raft``     sample, keep the top ``baseline.raft_accept_fraction`` by reward, denoising  rlsd.methods.raft
             loss on them
``rwr``      denoising loss on every sample, weighted by exp(r / beta) (or normalised r)  rlsd.methods.rwr
``refl``     reward gradient through the predicted x0 at a random late step              rlsd.methods.refl
``draft``    reward gradient through the last ``baseline.draft_k`` steps (DRaFT-K), or    rlsd.methods.draft
             ``draft_lv`` re-noised copies of the last step (DRaFT-LV)
===========  ==========================================================================  =====================

Every method reuses the trainer's sampler (``RLTrainer.collect``: same prompts, per-slot noise and gathered
rewards), models, optimizer, L_pre step, logging, checkpoint/resume and export; only the update differs.
Everything random derives from ``(train.seed, iteration)`` and is drawn for the global batch, so results do not
depend on the number of ranks.
"""

from __future__ import annotations

from typing import Any, Callable

from rlsd.methods.options import METHODS, REWARD_GRADIENT_METHODS, SUPERVISED_METHODS, BaselineConfig

__all__ = ["METHODS", "BaselineConfig", "build_method"]


def build_method(trainer: Any) -> Callable[[int], dict[str, float]] | None:
    """The iteration function ``step(iteration) -> metrics`` of ``trainer.cfg.train.method``.

    Returns None for ``rl`` and ``ddpo`` (the trainer's own PPO step). Raises ValueError when the method cannot
    run as configured (e.g. a reward-gradient method with a reward that has no gradient).
    """
    method = trainer.cfg.train.method
    if method in ("rl", "ddpo"):
        return None
    if method in SUPERVISED_METHODS:
        from rlsd.methods.supervised import SupervisedUpdate

        return SupervisedUpdate(trainer)
    if method in REWARD_GRADIENT_METHODS:
        from rlsd.methods.reward_gradient import RewardGradientUpdate

        return RewardGradientUpdate(trainer)
    raise ValueError(f"invalid config value train.method={method!r}: must be one of {', '.join(METHODS)}.")
