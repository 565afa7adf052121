"""ShapesWorld figures for the notebooks (matplotlib; figures are returned, saved by ``save_figure``)."""

from __future__ import annotations

import numpy as np

from rlsd.shapes.grammar import COLOURS
from rlsd.shapes.render import PALETTE

__all__ = ["colour_share_figure", "loss_curve_figure", "image_grid_figure", "open_colour_shares"]


def open_colour_shares(captions: list[str], scenes) -> dict[str, np.ndarray]:
    """Colour shares (4,) of object 0 for colour-open vs colour-named one-object captions."""
    from rlsd.shapes.grammar import parse

    counts = {"colour left open": np.zeros(len(COLOURS)), "colour named": np.zeros(len(COLOURS))}
    for text, scene in zip(captions, scenes):
        spec = parse(text)
        if spec.relation is None:
            key = "colour left open" if spec.objects[0].colour is None else "colour named"
            counts[key][COLOURS.index(scene.objects[0].colour)] += 1
    return {k: v / max(v.sum(), 1) for k, v in counts.items()}


def colour_share_figure(shares: dict[str, np.ndarray], title: str):
    """Grouped bar plot: one group per colour bucket, one bar per entry of ``shares`` (label -> (4,))."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    width = 0.8 / max(len(shares), 1)
    x = np.arange(len(COLOURS))
    for i, (label, values) in enumerate(shares.items()):
        bars = ax.bar(x + i * width, values, width, label=label, edgecolor="black")
        for bar, colour in zip(bars, COLOURS):
            bar.set_facecolor(PALETTE[colour])
            bar.set_alpha(1.0 - 0.5 * i / max(len(shares), 1))
    ax.axhline(1 / len(COLOURS), color="grey", ls="--", lw=1, label="uniform")
    ax.set_xticks(x + width * (len(shares) - 1) / 2, COLOURS)
    ax.set_ylabel("share")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_curve_figure(curves: dict[str, list[list[float]]], title: str = "denoising loss",
                      prediction_type: str = "v_prediction"):
    """Loss curves, label -> [[step, loss], ...] (e.g. the shipped manifest's ``loss_curve``), of a model trained
    with ``prediction_type`` (the MSE against the v or epsilon target)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for label, curve in curves.items():
        arr = np.asarray(curve, dtype=float)
        ax.plot(arr[:, 0], arr[:, 1], marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"MSE of the {prediction_type.replace('_', '-')} target")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def image_grid_figure(images, labels: list[str], nrow: int, title: str = ""):
    """Grid of images (B, 3, H, W) in [0, 1], ``nrow`` per row, one label per row (its first image's)."""
    import matplotlib.pyplot as plt

    from rlsd.recording import image_grid

    grid = image_grid(images, nrow=nrow)
    rows = int(np.ceil(len(images) / nrow))
    fig, ax = plt.subplots(figsize=(nrow * 0.8 + 2.5, rows * 0.8 + 0.5))
    ax.imshow(grid, interpolation="nearest")
    h = grid.shape[0] / rows
    ax.set_yticks([h * (r + 0.5) for r in range(rows)], [labels[r * nrow] for r in range(rows)], fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
