"""``make demo``: the paper's joint RL (Alg. 1) on ShapesWorld, end to end on CPU.

    python -m rlsd.demo [--config configs/shapes_joint.yaml] [--out outputs/demo] [key=value ...]

1. RL-fine-tunes the shipped base model (``data/shapesworld_base``) on the three tasks jointly, with
   L_pre on the pretraining renders (``rlsd.train.run``; logs, checkpoints and the export go to
   ``<out>/run``).
2. Evaluates base and fine-tuned models on held-out prompts with the same seeds (same initial noise):
   colour-open prompts for diversity, two-object compositions never seen in training for
   compositionality, and both for the preference proxy and the hidden gold quality.
3. Writes ``<out>/results.md`` / ``results.csv`` (base vs fine-tuned, change and its paired standard error,
   win-rate, paired one-sided Wilcoxon p; SP paired by blocks of 8 seeds), ``samples.csv`` (every sample's
   scores) and the figures: reward curves per task, before/after grids on fixed seeds, the colour histogram.

The paper's metric each ShapesWorld metric stands for:

=====================  ==========================  ==============================================
metric                 paper analogue              better
=====================  ==========================  ==============================================
preference proxy       ImageReward                 higher (the reward that was optimised)
gold quality           human judgement             higher (never optimised: over-optimisation check)
detection score        UniDet score (Eq. 13)       higher
count-aware detection  none (a reward-hacking      higher (never optimised: detections beyond the
                       check of Eq. 13)            named objects count as misses)
statistical parity     skin-tone SP (Eq. 12)       lower (0 = uniform over the 4 colours)
=====================  ==========================  ==============================================
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rlsd.shapes.grammar import COLOURS

#: (row label, per-sample column, prompt set, higher is better)
METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("preference proxy (≈ ImageReward)", "shapes_preference", "all", True),
    ("gold quality (never optimised)", "shapes_gold", "all", True),
    ("detection score (≈ Eq. 13)", "shapes_detection", "compositional", True),
    ("count-aware detection (extras as misses)", "shapes_detection_count_aware",
     "compositional", True),
    ("statistical parity (≈ Eq. 12)", "statistical_parity", "diversity", False),
)


#: seeds per statistical-parity group in the evaluation (the diversity task's training group size)
SP_BLOCK = 8
#: first seed of the range shared by the compositional evaluation prompts (outside the training sample streams)
COMPOSITIONAL_SEED_START = 10_000


@dataclass
class HeldOut:
    """Held-out evaluation prompts, by the task they probe."""

    diversity: list[str]
    compositional: list[str]

    @property
    def all(self) -> list[str]:
        return self.diversity + self.compositional


def sample_compositions(split: str, num: int, seed: int = 0, *, name: str = "num_compositional") -> list[str]:
    """``num`` two-object captions of ``split`` ("train" or "eval"), a seeded choice; ``name`` is the argument
    the error message names."""
    from rlsd.prompts.shapes import compositional_prompts

    pool = compositional_prompts(split)
    if not 0 < num <= len(pool):
        which = "held-out" if split == "eval" else split
        raise ValueError(f"{name} must be in 1..{len(pool)} ({which} compositions), got {num}")
    return random.Random(seed).sample(pool, num)


def heldout_prompts(num_compositional: int, seed: int = 0) -> HeldOut:
    """Colour-open prompts and ``num_compositional`` held-out two-object compositions (seeded choice)."""
    from rlsd.prompts.shapes import UNDERSPECIFIED_PROMPTS

    return HeldOut(list(UNDERSPECIFIED_PROMPTS), sample_compositions("eval", num_compositional, seed))


def eval_seeds(prompts: HeldOut, num_seeds: int, num_diversity_seeds: int) -> dict[str, list[int]]:
    """``{prompt: seeds}``: one seed range shared by the compositional prompts, a disjoint range per colour-open one.

    The colour-open captions barely steer the base model beyond the colour prior, so on shared seeds
    "a circle" and "a square" give near-copies of one image and their SP blocks would not be independent.
    All seeds lie outside the training sample streams.
    """
    shared = list(range(COMPOSITIONAL_SEED_START, COMPOSITIONAL_SEED_START + num_seeds))
    seeds = {p: shared for p in prompts.compositional}
    for i, p in enumerate(prompts.diversity):
        start = 20_000 + i * num_diversity_seeds
        seeds[p] = list(range(start, start + num_diversity_seeds))
    return seeds


def evaluate_pair(base_dir: Path, tuned_dir: Path, prompts: HeldOut, seeds: dict[str, list[int]], *, num_steps: int,
                  guidance_scale: float) -> dict[str, tuple[pd.DataFrame, object]]:
    """Per-prompt tables and raw results of base and fine-tuned models on the same prompts and seeds.

    The pairwise comparison (win-rate, p) is made on the raw per-sample results by :func:`results_table`.
    """
    from rlsd.models import load_model
    from rlsd.shapes.evaluate import DEFAULT_REWARDS, build_rewards, evaluate

    rewards = build_rewards((*DEFAULT_REWARDS, "shapes_detection_count_aware"))
    return {label: evaluate(load_model(folder), prompts.all, seeds, rewards, num_steps=num_steps,
                            guidance_scale=guidance_scale)
            for label, folder in (("base", base_dir), ("fine-tuned", tuned_dir))}


def results_table(evals: dict[str, tuple[pd.DataFrame, object]], prompts: HeldOut, sp_block: int) -> pd.DataFrame:
    """One row per metric: base, fine-tuned, change and its paired SE, win-rate and p of fine-tuned vs base.

    Per-sample metrics are paired by (prompt, seed); statistical parity by blocks of ``sp_block`` seeds
    of one prompt (:func:`rlsd.shapes.evaluate.parity_per_block`). ``p`` is the Wilcoxon signed-rank
    test of "fine-tuned is better" (:func:`rlsd.evaluation.paired_test`).
    """
    from rlsd.evaluation import paired_test
    from rlsd.shapes.evaluate import parity_per_block

    subsets = {"all": prompts.all, "compositional": prompts.compositional, "diversity": prompts.diversity}
    rows = []
    for label, column, subset, higher in METRICS:
        values = {}
        for name, (_, result) in evals.items():
            keep = np.flatnonzero(result.table["prompt"].isin(subsets[subset]).to_numpy())
            if column == "statistical_parity":
                values[name] = parity_per_block(result.images[torch.from_numpy(keep)],
                                                result.table["prompt"].iloc[keep].tolist(), sp_block)
            else:
                values[name] = result.table[column].iloc[keep].to_numpy()
        test = paired_test(values["fine-tuned"], values["base"], higher_is_better=higher)
        change = test["mean"] - test["mean_reference"]
        rows.append({"metric": label, "prompts": f"{subset} ({len(subsets[subset])})", "base": test["mean_reference"],
                     "fine-tuned": test["mean"], "change": change, "change SE": test["change_se"],
                     "improved": change > 0 if higher else change < 0,
                     "win-rate vs base": test["win_rate"], "p (one-sided Wilcoxon)": test["p_value"]})
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-markdown rendering of ``table`` with floats to 3 decimals."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.1e}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_figures(run_dir: Path, evals: dict, prompts: HeldOut, figures: Path, params: dict) -> list[Path]:
    """Reward curves, before/after grids and the colour histogram, each saved with its JSON sidecar."""
    import matplotlib.pyplot as plt

    from rlsd.plotting import before_after_grid, bucket_histogram, reward_curves
    from rlsd.recording import read_metrics, save_figure

    metrics = read_metrics(run_dir)
    tasks = sorted({k.split("/")[1] for k in metrics.columns if k.startswith("reward/") and k.endswith("/mean")})
    curves = {f"train reward: {t}": f"reward/{t}/mean" for t in tasks}
    curves.update({f"held-out eval: {k.split('/')[1]}": k for k in metrics.columns
                   if k.startswith("eval/") and k.endswith("/mean")})
    source = f"python -m rlsd.demo; run {run_dir}"
    saved = [save_figure(reward_curves(metrics, curves, smooth=5), "demo_reward_curves", params=params,
                         data_source=source, out_dir=figures)["png"]]
    (base_table, base), (_, tuned) = evals["base"], evals["fine-tuned"]
    prompt_col = base.table["prompt"].to_numpy()
    for name, chosen in (("compositional", prompts.compositional[:4]), ("diversity", prompts.diversity)):
        rows = [int(r) for p in chosen for r in (prompt_col == p).nonzero()[0][:2]]  # first 2 seeds of each prompt
        fig = before_after_grid(base.images[rows], tuned.images[rows], [base.table["prompt"][r] for r in rows])
        saved.append(save_figure(fig, f"demo_before_after_{name}", params=params, data_source=source, out_dir=figures)["png"])
    under = {label: t[t["prompt"].isin(prompts.diversity)][[f"share_{c}" for c in COLOURS]].mean().to_numpy()
             for label, (t, _) in evals.items()}
    saved.append(save_figure(bucket_histogram(under, COLOURS), "demo_colour_histogram", params=params,
                             data_source=source, out_dir=figures)["png"])
    plt.close("all")
    return saved


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlsd.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shapes_joint.yaml", help="RL config (ShapesWorld joint)")
    parser.add_argument("--out", default="outputs/demo", help="run, results table and evaluation outputs")
    parser.add_argument("--figures", default="figures", help="where figures (PNG, PDF, JSON sidecar) go")
    parser.add_argument("--eval-seeds", type=int, default=16, help="seeds per held-out compositional prompt (shared)")
    parser.add_argument("--eval-diversity-seeds", type=int, default=32,
                        help="seeds per colour-open prompt (each prompt its own; SP is paired by blocks of 8)")
    parser.add_argument("--eval-compositional", type=int, default=12, help="held-out two-object prompts")
    parser.add_argument("--skip-train", action="store_true", help="reuse <out>/run/export from an earlier run")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (pinned: float reduction order, hence the exact run, depends on it)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.iterations=10")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    import torch

    from rlsd.config import load_config
    from rlsd.train import run

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    overrides = [*args.overrides, f"log.run_dir={out / 'run'}"]
    cfg = load_config(args.config, overrides)
    run_dir = Path(cfg.log.run_dir)
    if not args.skip_train:
        print(f"[demo] RL fine-tuning {cfg.model.path} on {[t.name for t in cfg.tasks]} -> {run_dir}", flush=True)
        run(args.config, overrides)
    export = run_dir / "export"
    if not export.is_dir():
        raise FileNotFoundError(f"{export} does not exist; run the demo without --skip-train first")
    prompts = heldout_prompts(args.eval_compositional, seed=cfg.train.seed)
    if min(args.eval_seeds, args.eval_diversity_seeds) < 1:
        raise ValueError(f"--eval-seeds and --eval-diversity-seeds must be >= 1, got {args.eval_seeds}, {args.eval_diversity_seeds}")
    seeds = eval_seeds(prompts, args.eval_seeds, args.eval_diversity_seeds)
    print(f"[demo] evaluating base and fine-tuned on {len(prompts.compositional)} held-out compositions x "
          f"{args.eval_seeds} seeds and {len(prompts.diversity)} colour-open prompts x {args.eval_diversity_seeds} seeds",
          flush=True)
    evals = evaluate_pair(Path(cfg.model.path), export, prompts, seeds, num_steps=cfg.sample.num_steps,
                          guidance_scale=cfg.sample.guidance_scale)
    # SP is a set statistic: one value per 8 seeds of a prompt (the training group size), else per prompt
    n_div = args.eval_diversity_seeds
    sp_block = SP_BLOCK if n_div % SP_BLOCK == 0 else n_div
    table = results_table(evals, prompts, sp_block=sp_block)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    pd.concat([result.table.assign(model=label) for label, (_, result) in evals.items()]).to_csv(
        out / "samples.csv", index=False)  # every (model, prompt, seed): the paired data behind the table
    (out / "results.md").write_text(markdown_table(table))
    params = {"config": args.config, "overrides": overrides, "heldout": prompts.all,
              "eval_seeds": {p: [s[0], s[-1]] for p, s in seeds.items()}}  # first and last of each range
    (out / "heldout.json").write_text(json.dumps(params, indent=2))
    figures = write_figures(run_dir, evals, prompts, Path(args.figures), params)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("[demo] wrote", out / "results.md", *figures, sep="\n  ")
    return table


if __name__ == "__main__":
    main()
