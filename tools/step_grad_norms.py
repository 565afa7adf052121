"""Policy-gradient norm at every DDIM step: which timesteps dominate an update?

Builds the trainer of a config (the base model, no optimizer step), samples and scores one iteration of every
task, then prints, for each step index j with a density, the step's std sigma_t and the global grad norm of
each task's weighted PPO loss at that step. The log-prob gradient scales as 1/sigma_t, so a nearly
deterministic last step can outweigh all others; ``train.min_step_std`` keeps such steps out of the draw::

    python tools/step_grad_norms.py --config configs/shapes_joint.yaml --iteration 0

Writes the table to stdout and, with ``--csv``, to a file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def step_grad_norms(cfg, iteration: int) -> pd.DataFrame:
    """One row per step with a density: ``j``, ``timestep``, ``std`` and one grad-norm column per task."""
    from rlsd.iteration import ppo_step_loss
    from rlsd.sampling import step_stds
    from rlsd.trainer import RLTrainer

    trainer = RLTrainer(cfg)
    stds = step_stds(trainer.model.scheduler, cfg.sample.eta)
    batches = [trainer.collect(i, iteration) for i in range(len(cfg.tasks))]
    rows = []
    for j in (stds > 0).nonzero().flatten().tolist():
        row = {"j": j, "timestep": int(trainer.model.scheduler.timesteps[j]), "std": float(stds[j])}
        for task, batch in zip(cfg.tasks, batches):
            rows_all = slice(0, len(batch.trajectory.prompts))
            loss, _, _ = ppo_step_loss(trainer.train_model, batch.trajectory, batch.advantages, j, rows_all,
                                       guidance_scale=cfg.sample.guidance_scale, eta=cfg.sample.eta,
                                       clip_range=cfg.train.clip_range)
            (loss * task.weight).backward()
            grads = [p.grad for p in trainer.params if p.grad is not None]
            row[f"grad_norm/{task.name}"] = float(torch.nn.utils.get_total_norm(grads))
            trainer.optimizer.zero_grad(set_to_none=True)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from rlsd.config import load_config
    from rlsd.recording import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "shapes_joint.yaml"))
    parser.add_argument("--iteration", type=int, default=0, help="iteration whose sample streams are used")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.seed=1")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ["log.progress=false", "log.run_dir=runs/step_grad_norms", *args.overrides])
    table = step_grad_norms(cfg, args.iteration)
    print_table(table, args.csv, digits=4)
    return table


if __name__ == "__main__":
    main()
