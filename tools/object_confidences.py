"""Which named object does a model lose? Per-object detection confidence and detected colours, per model.

For each model folder and each two-object (or one-object) prompt, samples ``--seeds`` images (the demo's
sampler settings: 20 DDIM steps, eta 1, CFG 2, seeds of the tuning set's compositional range, rlsd.protocol) and
prints one row per (model, prompt): the mean confidence of each named object under the best assignment
(:func:`rlsd.shapes.match.best_assignment`), the mean detection score, and how many detections of each colour
the images hold. It showed how the diversity task leaks into two-object prompts (docs/findings.md): after the joint demo
run with ``train.max_grad_norm=0.02``, "a yellow circle next to a red circle" keeps its yellow circle
(0.74 -> 0.91) and loses its red one (0.83 -> 0.57): red detections fell from 44 to 26 and yellow ones rose from
32 to 51, so the red object is now drawn yellow. ``objects_per_image`` showed the session-11 demo drawing extra
objects, which the detection score ignores (2.30 -> 3.02 on the 12 held-out compositions)::

    python tools/object_confidences.py data/shapesworld_base outputs/demo/run/export \\
        --prompts "a yellow circle next to a red circle" "a blue square below a red circle"

Writes the table to stdout and, with ``--csv``, to a file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rlsd.shapes.grammar import COLOURS


def object_confidences(folders: list[str], prompts: list[str], seeds: list[int], *, num_steps: int = 20,
                       guidance_scale: float = 2.0, eta: float = 1.0) -> pd.DataFrame:
    """One row per (model, prompt): ``conf_object0``, [``conf_object1``], ``detection``, ``objects_per_image``
    (detections per image, at most ``MAX_DETECTIONS``; above the named count = extra objects),
    ``detection_count_aware`` (each image's confidence sum over ``max(named objects, detections)``: extra objects
    count as misses) and ``n_<colour>``."""
    from rlsd.models import load_model
    from rlsd.sampling import sample_trajectories
    from rlsd.shapes.detector import detect_batch
    from rlsd.shapes.grammar import parse
    from rlsd.shapes.match import MAX_DETECTIONS, best_assignment, count_aware_match

    rows = []
    for folder in folders:
        model = load_model(folder)
        for prompt in prompts:
            spec = parse(prompt)
            generators = [torch.Generator().manual_seed(s) for s in seeds]
            traj = sample_trajectories(model, [prompt] * len(seeds), num_steps=num_steps, guidance_scale=guidance_scale,
                                       eta=eta, generator=generators)
            detections = detect_batch(traj.images)
            confs = np.array([best_assignment(d[:MAX_DETECTIONS], spec)[0] for d in detections])  # (S, objects)
            colours = [d.colour for dets in detections for d in dets[:MAX_DETECTIONS]]
            row = {"model": folder, "prompt": prompt, "n": len(seeds)}
            row.update({f"conf_object{i}": float(c) for i, c in enumerate(confs.mean(0))})
            row["detection"] = float(confs.mean())
            row["objects_per_image"] = len(colours) / len(seeds)
            row["detection_count_aware"] = float(np.mean([count_aware_match(d, prompt) for d in detections]))
            row.update({f"n_{c}": colours.count(c) for c in COLOURS})
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from rlsd.protocol import HeldOut, eval_seeds
    from rlsd.recording import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders (the base and one or more exports)")
    parser.add_argument("--prompts", nargs="+", required=True, help="captions of the ShapesWorld grammar")
    parser.add_argument("--seeds", type=int, default=32, help="seeds per prompt (the tuning set's shared range)")
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    missing = [m for m in args.models if not Path(m).is_dir()]
    if missing:
        raise FileNotFoundError(f"model folder(s) {missing} not found; pass data/shapesworld_base or a run's export/")
    torch.set_num_threads(args.threads)
    seeds = eval_seeds("tuning", HeldOut([], list(args.prompts), []), args.seeds, 1)[args.prompts[0]]
    table = object_confidences(args.models, args.prompts, seeds, num_steps=args.num_steps,
                               guidance_scale=args.guidance_scale)
    print_table(table, args.csv, digits=3)
    return table


if __name__ == "__main__":
    main()
