"""How the guidance scale trades the base model's colour bias against its quality, on the tuning set.

For each ``--scales`` value, samples the model on the tuning set of :mod:`rlsd.protocol` (colour-open prompts and
unseen compositions, the demo's sampler otherwise) and prints the empty share and largest colour share on the
colour-open prompts, count-aware detection and the exactly-the-named-objects share on the compositions, and gold::

    python tools/cfg_sweep.py data/shapesworld_base --scales 1,1.5,2,3

The data draws colour-open objects red 70 % of the time; guidance amplifies that prior.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch


def cfg_sweep(folder: str, scales: list[float], *, num_steps: int = 20, seed: int = 100) -> pd.DataFrame:
    """One row per guidance scale (see the module docstring)."""
    from rlsd.demo import evaluate_model
    from rlsd.protocol import eval_seeds, heldout_prompts
    from rlsd.study import metric_values

    prompts = heldout_prompts("tuning", 12, 0, seed=seed)
    seeds = eval_seeds("tuning", prompts, 8, 32)
    subsets = {"all": prompts.all, "compositional": prompts.compositional, "diversity": prompts.diversity}
    rows = []
    for scale in scales:
        table, _ = evaluate_model(Path(folder), prompts, seeds, num_steps=num_steps, guidance_scale=scale)
        row = {"guidance_scale": scale}
        row.update({key: float(metric_values(table, key, subsets, 8).mean())
                    for key in ("empty", "top_colour", "count_aware", "exact", "gold")})
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from rlsd.recording import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model folder, e.g. data/shapesworld_base")
    parser.add_argument("--scales", default="1,1.5,2,3", help="comma-separated guidance scales")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"{args.model} not found; pass data/shapesworld_base or a run's export/")
    try:
        scales = [float(s) for s in args.scales.split(",")]
    except ValueError:
        raise ValueError(f"--scales must be comma-separated numbers, got {args.scales!r}") from None
    torch.set_num_threads(args.threads)
    table = cfg_sweep(args.model, scales)
    print_table(table, digits=3)
    return table


if __name__ == "__main__":
    main()
