"""Credit assignment of the distribution-level reward, measured: the ShapesWorld diversity task alone.

Trains ``configs/shapes_diversity.yaml`` (4 colour-open prompts x 8 images per iteration) with the colour-parity
reward under one ``credit`` mode, without L_pre, then counts the main-object colour of base and fine-tuned
samples of each colour-open prompt on its own fixed seeds (the same seeds for both models). One run per call::

    python tools/credit_ablation.py --credit group --lr 2e-5 --iterations 15
    python tools/credit_ablation.py --credit leave_one_out --lr 2e-5 --iterations 15

Writes ``<out>/<credit>_lr<lr>_it<iterations>.json`` with the per-prompt colour counts and the mean SP over prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rlsd.shapes.grammar import COLOURS

ROOT = Path(__file__).resolve().parents[1]


def colour_counts(model_dir: Path, num_seeds: int, num_steps: int, guidance_scale: float) -> dict[str, list[int]]:
    """``{prompt: [no object, red, green, blue, yellow]}`` counts over ``num_seeds`` samples of each colour-open prompt.

    The seeds are the tuning set's (:func:`rlsd.protocol.eval_seeds`: each colour-open prompt its own range).
    """
    from rlsd.evaluation import evaluate
    from rlsd.models import load_model
    from rlsd.prompts.shapes import UNDERSPECIFIED_PROMPTS
    from rlsd.protocol import HeldOut, eval_seeds
    from rlsd.rewards.shapes import colour_buckets

    prompts = list(UNDERSPECIFIED_PROMPTS)
    result = evaluate(load_model(model_dir), prompts, eval_seeds("tuning", HeldOut(prompts, [], []), 1, num_seeds), {},
                      num_steps=num_steps, guidance_scale=guidance_scale)
    buckets = colour_buckets(result.images, result.table["prompt"].tolist())
    return {p: np.bincount(buckets[(result.table["prompt"] == p).to_numpy()] + 1, minlength=len(COLOURS) + 1).tolist()
            for p in prompts}


def parity(counts: list[int]) -> float:
    """SP of one prompt's colour counts (index 0, images without an object, is left out)."""
    from rlsd.rewards.parity import statistical_parity

    return statistical_parity(np.repeat(np.arange(len(COLOURS)), counts[1:]), len(COLOURS))


def main(argv: list[str] | None = None) -> dict:
    from rlsd.config import load_config
    from rlsd.train import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credit", choices=("group", "leave_one_out"), required=True)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=64, help="evaluation samples per colour-open prompt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "credit_ablation")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    name = f"{args.credit}_lr{args.lr:g}_it{args.iterations}"
    run_dir = args.out / name
    config = ROOT / "configs" / "shapes_diversity.yaml"
    overrides = [f"train.lr={args.lr}", f"train.iterations={args.iterations}", f"log.run_dir={run_dir}",
                 "pretrain.enabled=false", "eval.every=0", "log.image_every=0", "log.checkpoint_every=0",
                 f"tasks.0.reward={{name: shapes_color_parity, credit: {args.credit}}}"]
    start = time.perf_counter()
    run(config, overrides)
    train_s = time.perf_counter() - start
    sample = load_config(config, overrides).sample
    counts = {label: colour_counts(folder, args.seeds, sample.num_steps, sample.guidance_scale)
              for label, folder in (("base", ROOT / "data" / "shapesworld_base"), ("fine-tuned", run_dir / "export"))}
    result = {"credit": args.credit, "lr": args.lr, "iterations": args.iterations, "train_s": round(train_s),
              "columns": ["no object", *COLOURS], "counts": counts,
              "sp": {label: float(np.mean([parity(c) for c in per_prompt.values()])) for label, per_prompt in counts.items()},
              "command": "python tools/credit_ablation.py " + " ".join(argv if argv is not None else [])}
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("credit", "lr", "iterations", "train_s", "sp")}))
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
