"""Held-out evaluation on fixed prompts and fixed seeds (the reward-hacking monitor), and win-rates.

Every (prompt, seed) pair is sampled with a generator seeded by ``seed`` alone, so two models evaluated
with the same prompts and seeds start from the same noise and a per-pair comparison (win-rate) is fair.
For distribution-level rewards the images of one prompt (all seeds) form one group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from rlsd.iteration import check_finite_rewards, sample_slots


@dataclass
class EvalResult:
    """Output of :func:`evaluate`.

    Attributes:
        summary: ``{"<reward>/mean": float, "<reward>/std": float}``.
        table: one row per (prompt, seed) with a column per reward.
        images: ``(N, 3, H, W)`` in [0, 1], rows in ``table`` order (prompt-major, then seed).
    """

    summary: dict[str, float]
    table: pd.DataFrame
    images: Tensor


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


@torch.no_grad()
def evaluate(model: Any, prompts: list[str], seeds: list[int] | Mapping[str, list[int]], rewards: dict[str, Any], *,
             num_steps: int, guidance_scale: float, eta: float = 1.0, batch_size: int = 16) -> EvalResult:
    """Sample every prompt once per seed and score the images with every reward.

    Args:
        model: ``T2IModel``; prompts: P prompts.
        seeds: S seeds shared by all prompts (N = P * S samples), or ``{prompt: seeds}`` to give prompts
            their own seeds (prompts whose images barely depend on the text, such as ShapesWorld's
            colour-open captions, would otherwise repeat one another's samples).
        rewards: ``{name: Reward}`` (built with ``rlsd.rewards.build_reward``).
        batch_size: samples per ``sample_trajectories`` call (does not change the results).
    """
    if not prompts or not seeds:
        raise ValueError("evaluation needs at least one prompt and one seed; set eval.prompts and eval.seeds.")
    per_prompt = seeds if isinstance(seeds, Mapping) else {p: seeds for p in prompts}
    missing = [p for p in prompts if not per_prompt.get(p)]
    if missing:
        raise ValueError(f"no seeds given for prompt(s) {missing}")
    pairs = [(p, s, i) for i, p in enumerate(prompts) for s in per_prompt[p]]
    images = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        traj = sample_slots(model, [p for p, _, _ in chunk], [_generator(s) for _, s, _ in chunk],
                            num_steps=num_steps, guidance_scale=guidance_scale, eta=eta)
        images.append(traj.images)
    images_t = torch.cat(images)
    table = pd.DataFrame({"prompt": [p for p, _, _ in pairs], "seed": [s for _, s, _ in pairs]})
    metadata = [{"group": i, "seed": s, "prompt": p} for p, s, i in pairs]
    summary: dict[str, float] = {}
    for name, reward in rewards.items():
        values, _ = reward(images_t, table["prompt"].tolist(), metadata)
        check_finite_rewards(values, name, "eval")
        table[name] = values.numpy()
        summary[f"{name}/mean"] = float(values.mean())
        summary[f"{name}/std"] = float(values.std()) if values.numel() > 1 else 0.0
    return EvalResult(summary=summary, table=table, images=images_t)


def _float64(values: Tensor | Any) -> Tensor:
    """A float64 CPU tensor of ``values``; array-likes are copied (pandas may hand out read-only arrays)."""
    if isinstance(values, Tensor):
        return values.detach().to("cpu", torch.float64)
    return torch.tensor(values, dtype=torch.float64)


def win_rate(rewards: Tensor | Any, reference: Tensor | Any) -> float:
    """Fraction of paired samples where ``rewards`` beats ``reference`` (ties count 1/2).

    Args:
        rewards, reference: ``(N,)`` rewards of two models on the same (prompt, seed) pairs.
    """
    a, b = _float64(rewards), _float64(reference)
    if a.shape != b.shape or a.ndim != 1 or a.numel() == 0:
        raise ValueError(f"win_rate needs two non-empty (N,) reward vectors on the same pairs, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}.")
    return float(((a > b).double() + 0.5 * (a == b).double()).mean())


def compare(table: pd.DataFrame, reference: pd.DataFrame, reward: str) -> dict[str, float]:
    """Win-rate and mean gain of ``table`` over ``reference`` for one reward column, joined on (prompt, seed)."""
    joined = table.merge(reference, on=["prompt", "seed"], suffixes=("", "_ref"))
    if len(joined) != len(table):
        raise ValueError("evaluation tables do not cover the same (prompt, seed) pairs; evaluate both with the "
                         "same eval.prompts and eval.seeds.")
    a = torch.tensor(joined[reward].to_numpy())
    b = torch.tensor(joined[f"{reward}_ref"].to_numpy())
    return {"win_rate": win_rate(a, b), "mean_gain": float((a - b).mean())}


def paired_test(new: Any, reference: Any, *, higher_is_better: bool = True) -> dict[str, float]:
    """One-sided paired test that ``new`` improves on ``reference`` (same prompts and seeds, row by row).

    Returns the two means, ``change_se`` (the standard error of the mean paired difference
    ``new - reference``, ``std(ddof=1) / sqrt(N)``; 0 for one pair), the win-rate (ties 1/2) and
    ``p_value`` of the Wilcoxon signed-rank test (scipy, ``zero_method="wilcox"``) against "no
    improvement"; pairs with equal values carry no information and are dropped, and ``p_value`` is 1.0
    when every pair ties. The test is on ranks, so a significant ``p_value`` can come with a mean
    change inside its own standard error (many small gains, a few large losses).

    Args:
        new, reference: ``(N,)`` per-sample (or per-group) values of two models on the same pairs.
        higher_is_better: ``False`` for metrics to minimise (e.g. statistical parity).
    """
    import numpy as np
    from scipy.stats import wilcoxon

    a, b = np.asarray(new, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_test needs two non-empty (N,) vectors on the same pairs, got shapes {a.shape} and {b.shape}.")
    gain = a - b if higher_is_better else b - a
    p = 1.0 if np.all(gain == 0) else float(wilcoxon(gain, alternative="greater", zero_method="wilcox").pvalue)
    win = win_rate(a, b) if higher_is_better else win_rate(b, a)
    se = float(gain.std(ddof=1) / np.sqrt(gain.size)) if gain.size > 1 else 0.0  # std of gain = std of a - b
    return {"mean": float(a.mean()), "mean_reference": float(b.mean()), "change_se": se, "win_rate": win,
            "p_value": p}


def plot_training_curves(metrics: pd.DataFrame, prefixes: tuple[str, ...] = ("reward/", "eval/")) -> Any:
    """One panel per metric family: the ``*/mean`` columns of ``metrics`` (``rlsd.recording.read_metrics``)
    whose key starts with each prefix, against the iteration. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    groups = [(p, [c for c in metrics.columns if c.startswith(p) and c.endswith("/mean")]) for p in prefixes]
    groups = [(p, cols) for p, cols in groups if cols]
    if not groups:
        raise ValueError(f"metrics have no '*/mean' columns under {prefixes}; pass read_metrics(run_dir) of a run.")
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
    for ax, (prefix, cols) in zip(axes[0], groups):
        for col in cols:
            series = metrics[col].dropna()
            ax.plot(series.index, series.values, marker="o", ms=3, label=col[len(prefix):-len("/mean")])
        ax.set_xlabel("iteration")
        ax.set_title(f"{prefix.rstrip('/')} (mean)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
