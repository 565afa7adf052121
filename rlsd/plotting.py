"""Figure builders shared by notebooks and ``make demo``.

Each function takes data, draws one matplotlib figure and returns it; saving (PNG + PDF + JSON
sidecar) is :func:`rlsd.recording.save_figure`'s job, so every figure on disk carries the commit
and parameters that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rlsd.recording import image_grid


def reward_curves(metrics: pd.DataFrame, keys: Mapping[str, str], *, smooth: int = 1,
                  title: str = "Reward during RL fine-tuning"):
    """One panel per curve: ``keys`` maps a panel title to a column of ``read_metrics`` output.

    Args:
        metrics: wide frame indexed by iteration (``rlsd.recording.read_metrics``).
        keys: ``{panel title: column}``; columns absent from ``metrics`` are reported, not skipped.
        smooth: centred rolling-mean window drawn over the raw curve (1 = raw only); curves with fewer than
            ``2 * smooth`` points (held-out evals) are drawn raw, with markers.
    """
    missing = [col for col in keys.values() if col not in metrics.columns]
    if missing:
        raise KeyError(f"metrics have no column(s) {missing}; available: {sorted(metrics.columns)}")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.0), squeeze=False)
    for ax, (panel, col) in zip(axes[0], keys.items()):
        series = metrics[col].dropna()
        smoothed = smooth > 1 and len(series) >= 2 * smooth  # a window over a few points (e.g. evals) flattens them
        ax.plot(series.index, series.values, color="0.7" if smoothed else "C0", lw=1,
                marker=None if len(series) > 10 else "o", ms=3)
        if smoothed:
            ax.plot(series.index, series.rolling(smooth, center=True, min_periods=1).mean(), color="C0", lw=2)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def before_after_grid(before: torch.Tensor, after: torch.Tensor, captions: Sequence[str], *,
                      labels: tuple[str, str] = ("base", "fine-tuned")):
    """Two rows of images on the same seeds: ``before`` and ``after`` are ``(B, 3, H, W)`` in [0, 1]."""
    if before.shape != after.shape:
        raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} must have one shape")
    n = before.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.25 * n, 3.0), squeeze=False)
    for row, (label, images) in enumerate(zip(labels, (before, after))):
        for i in range(n):
            ax = axes[row][i]
            ax.imshow(image_grid(images[i : i + 1], nrow=1, padding=0))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
            if row == 0:
                ax.set_title(_wrap(captions[i]), fontsize=6)
    fig.tight_layout()
    return fig


def bucket_histogram(counts: Mapping[str, Sequence[float]], bucket_names: Sequence[str], *,
                     title: str = "Colour of the main object, under-specified prompts"):
    """Grouped bars of bucket shares, one group of bars per entry of ``counts`` (e.g. base / fine-tuned)."""
    width = 0.8 / max(len(counts), 1)
    x = np.arange(len(bucket_names))
    fig, ax = plt.subplots(figsize=(4.8, 3.0))
    for k, (label, values) in enumerate(counts.items()):
        values = np.asarray(values, dtype=float)
        shares = values / max(values.sum(), 1.0)
        ax.bar(x + (k - (len(counts) - 1) / 2) * width, shares, width, label=label)
    ax.axhline(1.0 / len(bucket_names), color="k", ls="--", lw=1, label="uniform")
    ax.set_xticks(x, bucket_names)
    ax.set_ylabel("share of images")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])
