"""``make demo``: the paper's joint RL (Alg. 1) on ShapesWorld, trained and judged on held-out test data.

    python -m rlsd.demo                              # one training seed (0): the CI replay, ~10 min on 2 cores
    python -m rlsd.demo --seeds 0-4 --single-tasks --figures figures --readme README.md   # the study
    python -m rlsd.demo --split tuning --seeds 100   # a tuning run: tuning prompts, seeds and training seeds only

For every training seed:

1. RL-fine-tunes the shipped base model (``data/shapesworld_base``) with ``--config`` (``rlsd.train.run``; logs,
   checkpoints and the export go to ``<out>/<config>/seed<k>/run``).
2. Evaluates base and fine-tuned on the held-out prompts and seeds of ``--split`` (:mod:`rlsd.protocol`):
   colour-open prompts, unseen compositions and training compositions, with the same initial noise.
3. Pairs the two per metric (:mod:`rlsd.study`) and writes ``<out>/per_seed.csv``, ``<out>/samples.csv``;
   over the seeds, ``<figures>/demo_results.md`` and ``.csv`` (mean change with a 95 % CI) and the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

__all__ = ["main", "parse_args", "study_prompts", "evaluate_model", "train_seed", "SINGLE_TASK_CONFIGS"]

#: the single-task presets the joint run is compared with (paper Table 5) and the metrics each task is judged by
SINGLE_TASK_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "preference": ("configs/shapes_preference.yaml", ("preference", "gold")),
    "compositional": ("configs/shapes_compositional.yaml", ("count_aware", "exact")),
    "diversity": ("configs/shapes_diversity.yaml", ("sp_drawn", "top_colour")),
}
#: seeds per statistical-parity block (the diversity task's training group size)
SP_BLOCK = 8


def study_prompts(args: argparse.Namespace):
    """The evaluation prompts and seeds of ``args.split`` (one fixed choice, shared by all training seeds)."""
    from rlsd.protocol import eval_seeds, heldout_prompts

    prompts = heldout_prompts(args.split, args.eval_compositional, args.eval_seen)
    return prompts, eval_seeds(args.split, prompts, args.eval_seeds, args.eval_diversity_seeds)


def evaluate_model(folder: Path, prompts, seeds: dict[str, list[int]], *, num_steps: int, guidance_scale: float):
    """``(per-sample table, EvalResult)`` of the model in ``folder`` (with ``exact`` and ``bucket`` columns)."""
    from rlsd.models import load_model
    from rlsd.shapes.evaluate import DEFAULT_REWARDS, build_rewards, evaluate
    from rlsd.study import sample_table

    rewards = build_rewards((*DEFAULT_REWARDS, "shapes_detection_count_aware"))
    _, result = evaluate(load_model(folder), prompts.all, seeds, rewards, num_steps=num_steps,
                         guidance_scale=guidance_scale, batch_size=64)
    return sample_table(result), result


def train_seed(config: str, seed: int, run_dir: Path, overrides: list[str], skip_train: bool) -> Path:
    """Train ``config`` at training seed ``seed`` into ``run_dir`` (or reuse it) and return its export folder."""
    from rlsd.train import run

    export = run_dir / "export"
    if not skip_train:
        print(f"[demo] RL fine-tuning with {config}, training seed {seed} -> {run_dir}", flush=True)
        run(config, [*overrides, f"train.seed={seed}", f"log.run_dir={run_dir}"])
    if not export.is_dir():
        raise FileNotFoundError(f"{export} does not exist; run the demo without --skip-train first")
    return export


def _check_seeds(split: str, seeds: list[int]) -> None:
    from rlsd.protocol import TEST_TRAIN_SEEDS, TUNING_TRAIN_SEEDS

    allowed = TEST_TRAIN_SEEDS if split == "test" else TUNING_TRAIN_SEEDS
    if split == "tuning" and min(seeds) >= min(TUNING_TRAIN_SEEDS):
        return  # any seed from 100 on may tune
    if not set(seeds) <= set(allowed):
        raise ValueError(f"--split {split} takes training seeds {allowed[0]}-{allowed[-1]}, got {seeds}; "
                         "tune on --split tuning (seeds 100+), report on --split test (seeds 0-4)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlsd.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shapes_joint.yaml", help="RL config (ShapesWorld joint)")
    parser.add_argument("--seeds", default="0", help="training seeds, e.g. 0 or 0-4 (test) or 100-102 (tuning)")
    parser.add_argument("--split", default="test", choices=("test", "tuning"), help="evaluation set (rlsd.protocol)")
    parser.add_argument("--single-tasks", action="store_true",
                        help="also train each task alone (configs/shapes_<task>.yaml) and report the joint share")
    parser.add_argument("--single-seeds", default="", help="training seeds of the single-task runs (default: --seeds)")
    parser.add_argument("--out", default="outputs/demo", help="runs, per-seed tables and samples")
    parser.add_argument("--figures", default="outputs/demo/figures",
                        help="results table and figures (PNG, PDF, JSON sidecar); the committed study writes figures/")
    parser.add_argument("--eval-compositional", type=int, default=16, help="unseen compositions of the split")
    parser.add_argument("--eval-seen", type=int, default=8, help="training compositions (seen)")
    parser.add_argument("--eval-seeds", type=int, default=12, help="seeds per composition (shared)")
    parser.add_argument("--eval-diversity-seeds", type=int, default=32,
                        help="seeds per colour-open prompt (each prompt its own; SP per block of 8)")
    parser.add_argument("--skip-train", action="store_true", help="reuse the runs' exports from an earlier call")
    parser.add_argument("--readme", default="", help="README whose results block to rewrite (the study's table)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (pinned: float reduction order, hence the exact run, depends on it)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. train.iterations=10")
    return parser.parse_args(argv)


def _run_config(name: str, config: str, seeds: list[int], base, args, prompts, eval_seed_map, sampler) -> list:
    from rlsd.study import paired_rows

    rows, samples = [], []
    subsets = {"all": prompts.all, "compositional": prompts.compositional,
               "seen_compositional": prompts.seen_compositional, "diversity": prompts.diversity}
    for seed in seeds:
        run_dir = Path(args.out) / name / f"seed{seed}" / "run"
        export = train_seed(config, seed, run_dir, args.overrides, args.skip_train)
        tuned, result = evaluate_model(export, prompts, eval_seed_map, **sampler)
        rows.append(paired_rows(base[0], tuned, subsets, SP_BLOCK).assign(run=name, seed=seed))
        samples.append(tuned.assign(model=f"{name}/seed{seed}"))
        if name == "joint" and seed == seeds[0]:
            first = result
    return rows, samples, (first if name == "joint" else None)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the study; returns the per-seed paired table (one row per run, seed and metric)."""
    import torch

    from rlsd.config import load_config
    from rlsd.protocol import train_seeds
    from rlsd.shapes.study_report import write_report

    args = parse_args(argv)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.eval_diversity_seeds % SP_BLOCK:
        raise ValueError(f"--eval-diversity-seeds must be a multiple of {SP_BLOCK} (SP is paired per block of 8)")
    seeds = train_seeds(args.seeds)
    _check_seeds(args.split, seeds)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    prompts, eval_seed_map = study_prompts(args)
    sampler = {"num_steps": cfg.sample.num_steps, "guidance_scale": cfg.sample.guidance_scale}
    print(f"[demo] {len(seeds)} training seed(s) {seeds}; evaluation on the {args.split} set: "
          f"{len(prompts.compositional)} unseen and {len(prompts.seen_compositional)} seen compositions x "
          f"{args.eval_seeds} seeds, {len(prompts.diversity)} colour-open prompts x {args.eval_diversity_seeds} seeds",
          flush=True)
    base = evaluate_model(Path(cfg.model.path), prompts, eval_seed_map, **sampler)
    runs = {"joint": args.config}
    if args.single_tasks:
        runs.update({task: path for task, (path, _) in SINGLE_TASK_CONFIGS.items()})
    rows, samples, first = [], [base[0].assign(model="base")], None
    single_seeds = train_seeds(args.single_seeds) if args.single_seeds else seeds
    _check_seeds(args.split, single_seeds)
    for name, config in runs.items():
        r, s, f = _run_config(name, config, seeds if name == "joint" else single_seeds, base, args, prompts,
                              eval_seed_map, sampler)
        rows, samples, first = rows + r, samples + s, first or f
    per_seed = pd.concat(rows, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed.to_csv(out / "per_seed.csv", index=False)
    pd.concat(samples, ignore_index=True).to_csv(out / "samples.csv", index=False)
    provenance = {"command": "python -m rlsd.demo " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "config": args.config, "split": args.split, "seeds": seeds, "overrides": args.overrides,
                  "single_task_seeds": single_seeds if args.single_tasks else [],
                  "prompts": {"diversity": prompts.diversity, "compositional": prompts.compositional,
                              "seen_compositional": prompts.seen_compositional},
                  "eval_seeds": {p: [s[0], s[-1]] for p, s in eval_seed_map.items()}}
    (out / "study.json").write_text(json.dumps(provenance, indent=2))
    written = write_report(per_seed, provenance, base, first, prompts, out, Path(args.figures), args.readme)
    print("[demo] wrote", out / "per_seed.csv", *written, sep="\n  ")
    return per_seed


def cli() -> None:
    """Console script ``rlsd-demo``: :func:`main` without its return value (exit status 0)."""
    main()


if __name__ == "__main__":
    cli()
