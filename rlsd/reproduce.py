"""``make reproduce``: base, the paper's RL and every baseline on ShapesWorld, over seeds, into tables and figures.

    python -m rlsd.reproduce [--seeds 0-2] [--iterations N] [--out data/results] [--runs ours,raft,...]

For each training seed of :data:`rlsd.protocol.TEST_TRAIN_SEEDS` named by ``--seeds`` and each run of
:data:`PLAN`, trains with ``python -m rlsd.train`` (a subprocess: its wall and CPU seconds are the cost of the
run), then evaluates the exported model on the held-out TEST set of :mod:`rlsd.protocol` (unseen compositions,
seen compositions, colour-open prompts; evaluation seeds of the test split). Every (run, seed) leaves
``<out>/runs/<run>__seed<k>.json`` (metrics, training curve, cost, resolved config, command) and, for the first
seed, ``<out>/grids/<run>.png`` (the same evaluation seeds for every run). :mod:`rlsd.reproduce_tables` then
writes the ``<out>/*.csv`` tables, ``<out>/results.json`` (provenance) and ``docs/results.md``, all generated from
those files; ``--report-only`` regenerates them without training. A finished (run, seed) is not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BASE_DIR = "data/shapesworld_base"
PREF = "configs/shapes_preference.yaml"


@dataclass(frozen=True)
class RunSpec:
    """One training run of the study: ``config`` plus ``overrides`` (``config`` None: the base model, untrained)."""

    name: str
    label: str
    config: str | None
    overrides: tuple[str, ...] = ()


PLAN: tuple[RunSpec, ...] = (
    RunSpec("base", "base (no fine-tuning)", None),
    RunSpec("ours", "ours (RL + L_pre)", PREF),
    RunSpec("raft", "RAFT", "configs/shapes_raft.yaml"),
    RunSpec("rwr", "reward-weighted (RWR)", "configs/shapes_rwr.yaml"),
    RunSpec("refl", "ReFL", "configs/shapes_refl.yaml"),
    RunSpec("draft", "DRaFT-LV", "configs/shapes_draft.yaml"),
    RunSpec("ddpo", "DDPO", "configs/shapes_ddpo.yaml"),
    RunSpec("ours_no_lpre", "ours without L_pre", PREF, ("pretrain.enabled=false",)),
    RunSpec("norm_per_prompt", "per-prompt normalisation", PREF, ("train.advantage_mode=per_prompt",)),
    RunSpec("norm_group", "group normalisation (4 prompts x 2)", PREF,
            ("train.advantage_mode=group", "tasks.0.group_size=2", "sample.num_prompts_per_iter=4")),
    RunSpec("batch_4", "ours, 4 samples per iteration", PREF, ("sample.num_prompts_per_iter=4",)),
    RunSpec("batch_16", "ours, 16 samples per iteration", PREF, ("sample.num_prompts_per_iter=16",)),
    RunSpec("single_compositional", "compositional task only", "configs/shapes_compositional.yaml"),
    RunSpec("single_diversity", "diversity task only", "configs/shapes_diversity.yaml"),
    RunSpec("joint", "joint (three tasks)", "configs/shapes_joint.yaml"),
)
RUNS = {spec.name: spec for spec in PLAN}
#: seeds per statistical-parity block (the diversity task's group size)
SP_BLOCK = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rlsd.reproduce", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0-2", help="training seeds of the TEST set, e.g. 0-2 or 0,3 (at least 3 for a CI)")
    p.add_argument("--iterations", type=int, default=0, help="RL iterations per run (0 = each preset's own, 25)")
    p.add_argument("--num-steps", type=int, default=0, help="DDIM steps for training and evaluation (0 = the presets' 20)")
    p.add_argument("--out", default="data/results", help="results folder (CSV, JSON, grids)")
    p.add_argument("--work", default="runs/reproduce", help="run folders (checkpoints, exports)")
    p.add_argument("--docs", default="docs/results.md", help="the generated report")
    p.add_argument("--runs", default="", help="comma-separated subset of the plan (default: all)")
    p.add_argument("--num-compositional", type=int, default=8, help="unseen (and seen) compositions evaluated")
    p.add_argument("--eval-seeds", type=int, default=8, help="evaluation seeds per composition")
    p.add_argument("--diversity-seeds", type=int, default=16, help="evaluation seeds per colour-open prompt (multiple of 8)")
    p.add_argument("--label", default="", help="label written into every result (e.g. 'reduced')")
    p.add_argument("--report-only", action="store_true", help="only regenerate tables and docs from <out>/runs")
    return p.parse_args(argv)


def train_overrides(spec: RunSpec, seed: int, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides of one (run, seed): seed, run folder, no train-time eval, export on."""
    out = [*spec.overrides, f"train.seed={seed}", f"log.run_dir={run_dir}", "eval.every=0", "log.export=true",
           "log.image_every=0", "log.progress=false", "log.checkpoint_every=0", "log.keep_last=1"]
    if args.iterations:
        out.append(f"train.iterations={args.iterations}")
    if args.num_steps:
        import yaml

        preset = yaml.safe_load(Path(spec.config or PREF).read_text())
        per_iter = min(int(preset.get("train", {}).get("timesteps_per_iter", 5)), max(1, args.num_steps - 1))
        out += [f"sample.num_steps={args.num_steps}", f"train.timesteps_per_iter={per_iter}"]
    return out


def train(spec: RunSpec, seed: int, run_dir: Path, args: argparse.Namespace) -> dict:
    """Run ``python -m rlsd.train`` for one (run, seed); returns the command and its wall and CPU seconds."""
    cmd = [sys.executable, "-m", "rlsd.train", "--config", spec.config, *train_overrides(spec, seed, run_dir, args)]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise RuntimeError(f"run {spec.name} seed {seed} failed ({proc.returncode}): {tail[0]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": " ".join(["python", *cmd[1:]]), "wall_s": time.perf_counter() - start, "cpu_s": cpu}


def training_curve(run_dir: Path, cfg) -> list[dict]:
    """Per iteration: samples so far and each task's mean training reward."""
    from rlsd.recording import read_metrics

    metrics = read_metrics(run_dir)
    per_iter = sum(cfg.task_samples(i) for i in range(len(cfg.tasks)))
    rows = []
    for step, row in metrics.iterrows():
        rewards = {t.name: float(row[f"reward/{t.name}/mean"]) for t in cfg.tasks if f"reward/{t.name}/mean" in row}
        rows.append({"iteration": int(step), "samples": int(step) * per_iter, **rewards})
    return rows


def evaluate_model(folder: str | Path, seed: int, args: argparse.Namespace, num_steps: int, guidance_scale: float):
    """Held-out TEST evaluation of the model in ``folder``: ``(summary metrics, EvalResult, HeldOut)``."""
    from rlsd.models import load_model
    from rlsd.protocol import eval_seeds, heldout_prompts
    from rlsd.reproduce_tables import summarize
    from rlsd.shapes.evaluate import DEFAULT_REWARDS, build_rewards, evaluate

    prompts = heldout_prompts("test", args.num_compositional, args.num_compositional, seed=seed)
    seeds = eval_seeds("test", prompts, args.eval_seeds, args.diversity_seeds)
    rewards = build_rewards((*DEFAULT_REWARDS, "shapes_detection_count_aware"))
    _, result = evaluate(load_model(folder), prompts.all, seeds, rewards, num_steps=num_steps,
                         guidance_scale=guidance_scale)
    return summarize(result, prompts, SP_BLOCK), result, prompts


def run_one(spec: RunSpec, seed: int, args: argparse.Namespace, out: Path) -> dict:
    """Train (unless base) and evaluate one (run, seed); writes and returns its record."""
    from rlsd.config import load_config

    run_dir = Path(args.work) / spec.name / f"seed{seed}"
    config = spec.config or PREF  # the base model is sampled like the preference preset
    cfg = load_config(config, train_overrides(spec, seed, run_dir, args))
    record: dict = {"run": spec.name, "label": spec.label, "seed": seed, "config_file": spec.config,
                    "overrides": list(spec.overrides), "study_label": args.label, "git_commit": _commit()}
    if spec.config is None:
        record.update(command="", wall_s=0.0, cpu_s=0.0, samples=0, curve=[], config=None)
        folder = BASE_DIR
    else:
        if run_dir.exists():  # a record made with other settings (or none): retrain from scratch, never continue it
            shutil.rmtree(run_dir)
        record.update(train(spec, seed, run_dir, args))
        record["curve"] = training_curve(run_dir, cfg)
        record["samples"] = record["curve"][-1]["samples"] if record["curve"] else 0
        record["config"] = cfg.to_dict()
        folder = run_dir / "export"
    t0 = time.perf_counter()
    metrics, result, prompts = evaluate_model(folder, seed, args, cfg.sample.num_steps, cfg.sample.guidance_scale)
    record.update(metrics=metrics, eval_s=time.perf_counter() - t0,
                  eval={"split": "test", "num_compositional": args.num_compositional, "eval_seeds": args.eval_seeds,
                        "diversity_seeds": args.diversity_seeds, "num_steps": cfg.sample.num_steps,
                        "guidance_scale": cfg.sample.guidance_scale, "num_samples": len(result.table)})
    if seed == min(args.seed_list):
        save_grid(result, prompts, out / "grids" / f"{spec.name}.png")
    path = out / "runs" / f"{spec.name}__seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=_jsonable))
    return record


def finished(path: Path, spec: RunSpec, seed: int, args: argparse.Namespace) -> bool:
    """Whether ``path`` holds this (run, seed) made with the same iterations, DDIM steps and evaluation sizes
    (a record of other settings, e.g. a reduced study's, is trained again and overwritten)."""
    from rlsd.config import load_config

    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    cfg = load_config(spec.config or PREF, train_overrides(spec, seed, Path(args.work), args))
    evals = record.get("eval", {})
    same_eval = (evals.get("num_compositional"), evals.get("eval_seeds"), evals.get("diversity_seeds"),
                 evals.get("num_steps")) == (args.num_compositional, args.eval_seeds, args.diversity_seeds,
                                             cfg.sample.num_steps)
    return same_eval and (spec.config is None or len(record.get("curve", [])) == cfg.train.iterations)


def save_grid(result, prompts, path: Path, per_prompt: int = 4) -> None:
    """PNG grid of the first ``per_prompt`` evaluation samples of 2 colour-open and 2 unseen prompts (fixed seeds)."""
    from rlsd.recording import image_grid

    chosen = prompts.diversity[:2] + prompts.compositional[:2]
    table = result.table.reset_index(drop=True)
    rows = [i for p in chosen for i in table.index[table["prompt"] == p][:per_prompt]]
    grid = image_grid(result.images[rows], nrow=per_prompt, padding=2)
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(grid)).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
    path.with_suffix(".json").write_text(json.dumps({"prompts": chosen, "per_prompt": per_prompt}, indent=1))


def _commit() -> str:
    """HEAD of the repository (``+dirty`` when tracked files differ from it), or "unknown"."""
    from rlsd.recording import _git

    head = _git(["rev-parse", "HEAD"], Path.cwd()) or "unknown"
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], Path.cwd())
    return head + ("+dirty" if dirty else "")


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def main(argv: list[str] | None = None) -> int:
    from rlsd.protocol import TEST_TRAIN_SEEDS, train_seeds
    from rlsd.reproduce_report import write_report

    args = parse_args(argv)
    args.seed_list = train_seeds(args.seeds)
    bad = [s for s in args.seed_list if s not in TEST_TRAIN_SEEDS]
    names = [n.strip() for n in args.runs.split(",") if n.strip()] or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if bad or unknown or args.diversity_seeds % SP_BLOCK:
        print(f"error: --seeds must be TEST training seeds {TEST_TRAIN_SEEDS} (got {bad}); --runs must name runs of "
              f"{list(RUNS)} (got {unknown}); --diversity-seeds must be a multiple of {SP_BLOCK}.", file=sys.stderr)
        return 2
    out = Path(args.out)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.report_only:
        for seed in args.seed_list:
            for name in names:
                if finished(out / "runs" / f"{name}__seed{seed}.json", RUNS[name], seed, args):
                    continue
                rec = run_one(RUNS[name], seed, args, out)
                print(f"{name} seed {seed}: train {rec['wall_s']:.0f} s, eval {rec['eval_s']:.0f} s", flush=True)
    write_report(out, Path(args.docs), command=" ".join(["python -m rlsd.reproduce", *(argv or sys.argv[1:])]),
                 plan=PLAN, report_only=args.report_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
