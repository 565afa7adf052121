"""Overhead of log-prob tracking: ``rlsd.sampling.sample_trajectories`` vs ``StableDiffusionPipeline.__call__``.

Both run the same UNet/VAE/text encoder, the same number of DDIM steps, CFG and eta, and the same generator
seed (so they produce the same images, which is checked). Repetitions are interleaved (order alternates
each repetition) so machine load affects both alike; we report median wall times and their ratio.

    python benchmarks/bench_sampler.py                         # tiny SD (4x8x8 latents)
    python benchmarks/bench_sampler.py --unet-config medium    # ~23M-param UNet at 4x32x32 latents
    python benchmarks/bench_sampler.py --unet-config my_unet.json --steps 50 --batch 4 --device cuda

Writes ``benchmarks/results/bench_sampler_<name>_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from common import MEDIUM_UNET, RESULTS  # noqa: E402  (puts the repo root on sys.path)
from rlsd.models import T2IModel, build_tiny_sd  # noqa: E402
from rlsd.sampling import ddim_step_with_logprob, guided_model_output, sample_trajectories  # noqa: E402


def build_model(unet_config: str, seed: int) -> T2IModel:
    """Tiny SD, with its UNet replaced by ``medium`` or a JSON UNet config file when given."""
    model = build_tiny_sd(seed=seed)
    if unet_config == "tiny":
        return model
    cfg = MEDIUM_UNET if unet_config == "medium" else json.loads(Path(unet_config).read_text())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.unet = UNet2DConditionModel(**cfg).eval()
    if model.unet.config.cross_attention_dim != model.text_encoder.config.hidden_size:
        raise ValueError(f"--unet-config cross_attention_dim must be {model.text_encoder.config.hidden_size}.")
    return model


def make_pipeline(model: T2IModel) -> StableDiffusionPipeline:
    """A pipeline sharing the model's networks, with its own (stateful) scheduler instance."""
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=DDIMScheduler.from_config(model.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, images


def step_overhead(model: T2IModel, batch: int, steps: int, guidance_scale: float, eta: float, reps: int,
                  device: torch.device) -> dict:
    """Median seconds of one CFG UNet call, one ``DDIMScheduler.step`` and one ``ddim_step_with_logprob``.

    The step-level numbers isolate the log-prob cost from the (noisy) end-to-end timings; the projected
    ratio is ``(unet + ours) / (unet + diffusers)`` per denoising step.
    """
    sched = DDIMScheduler.from_config(model.scheduler.config)
    sched.set_timesteps(steps)
    model.scheduler.set_timesteps(steps)
    shape = (batch, model.latent_channels, model.sample_size, model.sample_size)
    x = torch.randn(shape, device=device)
    emb = model.encode_prompts(["a red circle"] * batch)
    t = sched.timesteps[steps // 2]
    gen = torch.Generator("cpu").manual_seed(0)
    fns = {
        "unet_cfg": lambda: guided_model_output(model, x, t.expand(batch), emb, emb, guidance_scale),
        "diffusers_step": lambda: sched.step(x, t, x, eta=eta, generator=gen),
        "rlsd_step": lambda: ddim_step_with_logprob(sched, x, t, x, eta=eta, generator=gen),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for rep in range(reps + 1):
            for name, fn in fns.items():
                elapsed = _timed(fn, device)[0]
                if rep:  # first round is warm-up
                    times[name].append(elapsed)
    med = {k: statistics.median(v) for k, v in times.items()}
    projected = (med["unet_cfg"] + med["rlsd_step"]) / (med["unet_cfg"] + med["diffusers_step"])
    return {"median_s": med, "projected_ratio": projected}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    model = build_model(args.unet_config, args.seed).to(device)
    pipe = make_pipeline(model)
    prompts = [f"a red circle {i}" for i in range(args.batch)]
    common = dict(guidance_scale=args.guidance_scale, eta=args.eta)
    gen_device = "cpu"

    def ours() -> torch.Tensor:
        gen = torch.Generator(gen_device).manual_seed(args.seed)
        return sample_trajectories(model, prompts, num_steps=args.steps, generator=gen, **common).images

    def theirs() -> torch.Tensor:
        gen = torch.Generator(gen_device).manual_seed(args.seed)
        return pipe(prompts, num_inference_steps=args.steps, generator=gen, output_type="pt", **common).images

    fns = {"rlsd_sample_trajectories": ours, "diffusers_pipeline": theirs}
    times: dict[str, list[float]] = {k: [] for k in fns}
    outputs = {k: fn() for k, fn in fns.items()}  # warm-up
    max_diff = float((outputs["rlsd_sample_trajectories"].cpu() - outputs["diffusers_pipeline"].cpu()).abs().max())
    for rep in range(args.reps):
        order = list(fns) if rep % 2 == 0 else list(reversed(fns))
        for name in order:
            times[name].append(_timed(fns[name], device)[0])
    medians = {k: statistics.median(v) for k, v in times.items()}
    per_step = step_overhead(model, args.batch, args.steps, args.guidance_scale, args.eta, args.step_reps, device)
    return {
        "step_level": per_step,
        "unet_config": args.unet_config, "unet_params_m": sum(p.numel() for p in model.unet.parameters()) / 1e6,
        "latent_shape": [model.latent_channels, model.sample_size, model.sample_size], "batch": args.batch,
        "steps": args.steps, "guidance_scale": args.guidance_scale, "eta": args.eta, "reps": args.reps,
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(), "commit": _git_commit(), "times_s": times, "median_s": medians,
        "ratio": medians["rlsd_sample_trajectories"] / medians["diffusers_pipeline"],
        "max_abs_image_diff": max_diff,
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet-config", default="tiny", help="tiny | medium | path to a UNet2DConditionModel JSON")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--batch", type=int, default=2, help="prompts per call")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions of each sampler")
    parser.add_argument("--guidance-scale", type=float, default=7.0)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--step-reps", type=int, default=50, help="repetitions of the step-level timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(f"{'sampler':<28}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, values in result["times_s"].items():
        print(f"{name:<28}{statistics.median(values):>10.4f}{min(values):>10.4f}{max(values):>10.4f}")
    print(f"ratio rlsd/diffusers = {result['ratio']:.4f} (target <= 1.03); UNet {result['unet_params_m']:.1f}M params, "
          f"{args.steps} steps, batch {args.batch}, {result['device']}; max |image diff| "
          f"{result['max_abs_image_diff']:.2e}")
    step = result["step_level"]
    print("per step (median ms): " + ", ".join(f"{k} {1e3 * v:.3f}" for k, v in step["median_s"].items())
          + f"; projected per-step ratio {step['projected_ratio']:.4f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = Path(args.unet_config).stem if args.unet_config not in ("tiny", "medium") else args.unet_config
    out = RESULTS / f"bench_sampler_{name}_{result['device'].split(':')[0]}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
