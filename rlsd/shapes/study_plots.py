"""Figures of the ShapesWorld study over training seeds (matplotlib; saved by ``rlsd.recording.save_figure``).

Every figure shows the mean over training seeds with a 95 % t-interval (:func:`rlsd.study.mean_ci`) and is
sized for one column of a paper (about 3.3 in wide per panel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from rlsd.shapes.grammar import COLOURS

__all__ = ["colour_shares_figure", "detection_figure", "seed_curves_figure", "colour_shares"]

BUCKETS = (*COLOURS, "none")
_MODEL_COLOURS = {"base": "0.55", "fine-tuned": "C0"}


def colour_shares(table: pd.DataFrame, prompts: Sequence[str]) -> np.ndarray:
    """Shares (5,) of red, green, blue, yellow and "none" (no main object) over ``prompts``' samples."""
    buckets = table[table["prompt"].isin(prompts)]["bucket"].to_numpy()
    counts = np.bincount(np.where(buckets < 0, len(COLOURS), buckets), minlength=len(BUCKETS))
    return counts / max(counts.sum(), 1)


def _bars(ax, values: Mapping[str, np.ndarray], names: Sequence[str]) -> None:
    """Grouped bars: ``values[model]`` is (seeds, len(names)); bar = mean, error bar = 95 % CI."""
    from rlsd.study import mean_ci

    width = 0.8 / len(values)
    x = np.arange(len(names))
    for k, (label, per_seed) in enumerate(values.items()):
        stats = [mean_ci(per_seed[:, j]) for j in range(len(names))]
        ax.bar(x + (k - (len(values) - 1) / 2) * width, [m for m, _ in stats], width, yerr=[h for _, h in stats],
               capsize=2, label=label, color=_MODEL_COLOURS.get(label))
    ax.set_xticks(x, names, fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def colour_shares_figure(shares: Mapping[str, np.ndarray], num_seeds: int):
    """Colour of the main object on colour-open prompts, with a "none" bar; ``shares[model]``: (seeds, 5)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    _bars(ax, shares, BUCKETS)
    ax.axhline(1.0 / len(COLOURS), color="k", ls="--", lw=0.8, label="uniform over colours")
    ax.set_ylabel("share of images")
    ax.set_title(f"Colour-open prompts (mean, 95% CI, {num_seeds} seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def detection_figure(values: Mapping[str, np.ndarray], names: Sequence[str], num_seeds: int):
    """Compositional metrics side by side (Eq. 13, count-aware, exactly the named objects); (seeds, len(names))."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    _bars(ax, values, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score on unseen compositions")
    ax.set_title(f"Compositionality (mean, 95% CI, {num_seeds} seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def seed_curves_figure(curves: Mapping[str, pd.DataFrame], ylabels: Mapping[str, str]):
    """One panel per task: training reward vs iteration, mean ± 95 % CI over seeds.

    ``curves[task]`` has one column per seed and one row per iteration; iteration 0 is the batch sampled
    from the base model before any update.
    """
    import matplotlib.pyplot as plt

    from rlsd.study import mean_ci

    fig, axes = plt.subplots(1, len(curves), figsize=(3.0 * len(curves), 2.5), squeeze=False)
    for ax, (task, frame) in zip(axes[0], curves.items()):
        stats = np.asarray([mean_ci(row.dropna()) for _, row in frame.iterrows()])
        ax.plot(frame.index, stats[:, 0], color="C0", lw=1.5)
        ax.fill_between(frame.index, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], color="C0", alpha=0.25)
        ax.axhline(stats[0, 0], color="0.5", ls="--", lw=0.8, label="iteration 0 (base)")
        ax.set_title(f"{task} ({frame.shape[1]} seeds)", fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabels.get(task, "training reward"), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
