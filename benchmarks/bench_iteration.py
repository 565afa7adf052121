"""Throughput of one full RL iteration (rlsd.trainer.RLTrainer.step), split into sampling / reward / training.

Runs the real trainer (DDIM sampling with log-probs + CFG, JPEG reward, gather + global advantages, k PPO
steps with an optimizer step each) on

* ``tiny``:   the tiny random SD (4x8x8 latents, ~1M-param UNet), and
* ``medium``: a ~23M-param UNet at 4x32x32 latents with the tiny VAE / CLIP text encoder.

    python benchmarks/bench_iteration.py                      # both models, CPU
    python benchmarks/bench_iteration.py --models medium --iters 3 --steps 20 --prompts 4

Reports per-phase seconds and samples/s (median over the measured iterations after one warm-up iteration) and
writes ``benchmarks/results/bench_iteration_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from common import MEDIUM_UNET, RESULTS  # noqa: E402  (puts the repo root on sys.path)
from rlsd.config import load_config  # noqa: E402
from rlsd.models import T2IModel, build_tiny_sd, export_model  # noqa: E402
from rlsd.trainer import RLTrainer  # noqa: E402


def model_path(name: str, folder: Path) -> str:
    """"tiny-sd", or a folder holding the medium model (random weights, seed 0)."""
    if name == "tiny":
        return "tiny-sd"
    from diffusers import UNet2DConditionModel

    tiny = build_tiny_sd(seed=0)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**MEDIUM_UNET)
    export_model(T2IModel(unet, tiny.scheduler, tiny.text_encoder, tiny.tokenizer, tiny.vae), folder / "medium")
    return str(folder / "medium")


def bench(name: str, args: argparse.Namespace, folder: Path) -> dict:
    cfg = load_config("configs/tiny_sd_smoke.yaml", [
        f"model.path={model_path(name, folder)}", f"sample.num_steps={args.steps}",
        f"sample.num_prompts_per_iter={args.prompts}", f"tasks.0.group_size={args.group}",
        f"train.timesteps_per_iter={args.timesteps}", f"log.run_dir={folder / name}", "log.progress=false"])
    trainer = RLTrainer(cfg)
    params = sum(p.numel() for p in trainer.model.unet.parameters())
    rows = [trainer.step(i) for i in range(args.iters + 1)][1:]  # drop the warm-up iteration
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith(("time/", "perf/"))}
    samples = args.prompts * args.group
    total = med["time/sample_s"] + med["time/reward_s"] + med["time/train_s"]
    return {"model": name, "unet_params_M": round(params / 1e6, 2), "samples_per_iter": samples,
            "num_steps": args.steps, "timesteps_per_iter": args.timesteps, **{k: round(v, 4) for k, v in med.items()},
            "sampling_samples_per_s": round(samples / med["time/sample_s"], 3),
            "share": {k: round(med[f"time/{k}_s"] / total, 3) for k in ("sample", "reward", "train")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    parser.add_argument("--iters", type=int, default=3, help="measured iterations (after 1 warm-up)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per trajectory")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per iteration")
    parser.add_argument("--group", type=int, default=2, help="images per prompt")
    parser.add_argument("--timesteps", type=int, default=5, help="PPO timesteps per iteration")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(m, args, Path(tmp)) for m in args.models]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"device": device, "torch": torch.__version__, "platform": platform.platform(), "threads": args.threads,
           "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bench_iteration_{device}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
