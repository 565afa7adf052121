"""rlsd's ``RLTrainer`` as a benchmark worker (the rlsd arm of ``bench_vs_trl.py``; runs in the project venv).

The matched config: ``--prompts`` prompts x group 2 = 16 samples per iteration, sampled in micro-batches of
``--sample-batch`` (``sample.batch_size``), DDIM ``--steps`` with eta 1 and CFG ``--guidance``, JPEG-size reward,
global advantage normalisation, ``--timesteps`` trained timesteps with an optimizer step after each (the
paper's rule), each step's gradient accumulated over micro-batches of ``--train-batch`` samples, full
fine-tune in fp32. Commands (see ``worker_loop.py``): ``step`` (one iteration) and ``profile`` (one iteration
with phase timers, ``profile.py``).

    python benchmarks/rlsd_worker.py --model FOLDER [--set sample.batch_size=8 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import yaml

import worker_loop
from common import REPO  # noqa: F401  (puts the repo root on sys.path)
from trl_worker import PROMPTS


def config_dict(args: argparse.Namespace, run_dir: str) -> dict:
    """The rlsd config of the comparison (sizes from ``args``)."""
    if args.samples % 2 or args.samples % args.train_batch:
        raise ValueError(f"--samples {args.samples} must be even and a multiple of --train-batch {args.train_batch}.")
    return {
        "model": {"path": args.model},
        "sample": {"num_steps": args.steps, "eta": 1.0, "guidance_scale": args.guidance,
                   "num_prompts_per_iter": args.samples // 2, "batch_size": args.sample_batch},
        "train": {"lr": args.lr, "clip_range": 1e-4, "adv_clip": 10.0, "max_grad_norm": 1.0,
                  "timesteps_per_iter": args.timesteps, "grad_accumulation": args.samples // args.train_batch,
                  "advantage_mode": "global_batch", "mixed_precision": "no", "seed": args.seed, "iterations": 10**6},
        "tasks": [{"name": "jpeg", "prompts": {"name": "list", "prompts": PROMPTS},
                   "reward": "jpeg_compressibility", "group_size": 2}],
        "pretrain": {"enabled": False}, "eval": {"every": 0},
        "log": {"run_dir": run_dir, "progress": False, "image_every": 0, "checkpoint_every": 0, "export": False},
    }


def build_trainer(args: argparse.Namespace, folder: str):
    from rlsd.config import load_config
    from rlsd.trainer import RLTrainer

    path = Path(folder) / "bench.yaml"
    path.write_text(yaml.safe_dump(config_dict(args, str(Path(folder) / "run"))))
    return RLTrainer(load_config(path, list(args.set)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="diffusers pipeline folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sample-batch", type=int, default=0, help="sample.batch_size (0 = all at once)")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="extra rlsd config overrides key=value")
    args = parser.parse_args()
    worker_loop.set_threads(args.threads)
    warnings.simplefilter("ignore")
    import torch

    from profile_phases import profile_step

    with tempfile.TemporaryDirectory() as folder:
        trainer = build_trainer(args, folder)
        state = {"iteration": 0, "ratio_dev": []}

        def step(profile: bool = False) -> dict:
            it = state["iteration"]
            metrics, phases = profile_step(trainer, it) if profile else (trainer.step(it), None)
            state["iteration"] += 1
            out = {"ratio_first_abs_dev": metrics["ppo/ratio_first_abs_dev"], "time": {
                k: v for k, v in metrics.items() if k.startswith("time/")}}
            return {**out, "profile": phases} if profile else out

        params = sum(p.numel() for p in trainer.model.unet.parameters())
        worker_loop.serve({"arm": "rlsd", "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "unet_params": params, "config": trainer.cfg.to_dict()},
                          {"step": step, "profile": lambda: step(profile=True)})


if __name__ == "__main__":
    main()
