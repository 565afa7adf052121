"""Does compositional RL fail to learn, or fail to generalise? Detection on training vs held-out compositions.

Evaluates the base model and a fine-tuned export on ``--prompts`` two-object captions drawn (seeded) from the
training compositions (the RL task's prompt pool, also rendered in pretraining) and as many from the held-out
ones (never trained on), on the same seeds, with the demo's sampler settings. Prints one row per split: base and
fine-tuned detection score, the mean paired change and its SE, and the one-sided Wilcoxon p of "fine-tuned is
better" (:func:`rlsd.evaluation.paired_test`)::

    python tools/train_vs_heldout.py outputs/demo/run/export --config configs/shapes_joint.yaml

A gain on the training split only means the task learned what it saw and did not carry it over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def train_vs_heldout(base: str, tuned: str, num_prompts: int, seeds: list[int], *, num_steps: int,
                     guidance_scale: float, seed: int = 0) -> pd.DataFrame:
    """One row per split ("train", "held-out") of the paired detection comparison of ``tuned`` against ``base``.

    The held-out compositions are the tuning half (:func:`rlsd.protocol.heldout_compositions`): a diagnostic never
    looks at the test set.
    """
    from rlsd.demo import evaluate_model
    from rlsd.evaluation import paired_test
    from rlsd.protocol import HeldOut, heldout_prompts

    chosen = heldout_prompts("tuning", num_prompts, num_prompts, seed=seed)
    rows = []
    for label, prompts in (("train", chosen.seen_compositional), ("held-out", chosen.compositional)):
        held = HeldOut([], prompts, [])
        values = [evaluate_model(Path(folder), held, {p: seeds for p in prompts}, num_steps=num_steps,
                                 guidance_scale=guidance_scale)[0]["shapes_detection"].to_numpy() for folder in (tuned, base)]
        test = paired_test(*values, higher_is_better=True)
        rows.append({"split": label, "prompts": num_prompts, "seeds": len(seeds), "base": test["mean_reference"],
                     "fine-tuned": test["mean"], "change": test["mean"] - test["mean_reference"],
                     "change SE": test["change_se"], "p (one-sided Wilcoxon)": test["p_value"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from rlsd.config import load_config
    from rlsd.protocol import HeldOut, eval_seeds
    from rlsd.recording import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="fine-tuned model folder (a run's export/)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "shapes_joint.yaml"),
                        help="the run's config: base model path and sampler settings")
    parser.add_argument("--prompts", type=int, default=12, help="compositions per split")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per composition (the tuning set's range)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of compositions")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not Path(args.export).is_dir():
        raise FileNotFoundError(f"{args.export} not found; pass a run's export/ (python -m rlsd.demo writes one)")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    seeds = eval_seeds("tuning", HeldOut([], ["a circle"], []), args.seeds, 1)["a circle"]
    table = train_vs_heldout(cfg.model.path, args.export, args.prompts, seeds,
                             num_steps=cfg.sample.num_steps, guidance_scale=cfg.sample.guidance_scale, seed=args.seed)
    print_table(table, digits=4)
    return table


if __name__ == "__main__":
    main()
