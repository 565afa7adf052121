"""RL-iteration throughput and MFU of the SD2-base UNet on one GPU (random weights; no download).

The UNet is built from SD2-base's published ``unet/config.json`` (written inline below), ~866M parameters,
4x64x64 latents (512 px). One RL iteration per GPU = the paper's work per rank:

* sampling: ``sample_trajectories`` with 50 DDIM steps, CFG 7 (one UNet call on 2B latents per step), eta 1;
* training: 5 random timesteps, each ``rescore_step`` (CFG, 2B latents) + PPO-clip loss + backward + AdamW step.

Text embeddings are random ``(B, 77, 1024)`` tensors and the VAE / reward are left out (they are <5% of the
paper's iteration). FLOPs of one UNet forward are counted with ``torch.utils.flop_counter``; a training step
is counted as 3x a forward. MFU = achieved FLOP/s / peak (default: H100 SXM dense bf16, 989 TFLOP/s).

    python benchmarks/bench_gpu_sd2.py --batch 16                 # bf16 autocast, gradient checkpointing
    python benchmarks/bench_gpu_sd2.py --device cpu --smoke       # tiny shapes: checks the code path only

Not run in this repository's CI (no GPU); writes ``benchmarks/results/bench_gpu_sd2_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from common import RESULTS  # noqa: E402  (puts the repo root on sys.path)
from rlsd.models import T2IModel, sd_ddim_scheduler  # noqa: E402
from rlsd.objective import ppo_clip_loss  # noqa: E402
from rlsd.sampling import rescore_step, sample_trajectories  # noqa: E402

SD2_BASE_UNET = dict(  # stabilityai/stable-diffusion-2-base unet/config.json
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, dual_cross_attention=False, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
    layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    sample_size=64, up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    use_linear_projection=True)
SMOKE_UNET = dict(SD2_BASE_UNET, block_out_channels=[32, 32, 64, 64], attention_head_dim=[2, 2, 4, 4],
                  cross_attention_dim=32, sample_size=8)


def build(args: argparse.Namespace) -> tuple[T2IModel, torch.Tensor, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(SMOKE_UNET if args.smoke else SD2_BASE_UNET)).to(args.device)
    if args.grad_ckpt:
        unet.enable_gradient_checkpointing()
    unet.train()
    model = T2IModel(unet, sd_ddim_scheduler(), text_encoder=None, tokenizer=None, vae=None)
    dim = unet.config.cross_attention_dim
    embeds = torch.randn(args.batch, 77, dim, device=args.device)
    return model, embeds, torch.zeros_like(embeds)


def unet_forward_flops(model: T2IModel, embeds: torch.Tensor) -> float:
    """FLOPs of one CFG UNet call (2B latents) counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    b, size = embeds.shape[0], model.unet.config.sample_size
    x = torch.randn(2 * b, 4, size, size, device=embeds.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.unet(x, torch.full((2 * b,), 500, device=embeds.device), encoder_hidden_states=torch.cat([embeds] * 2))
    return float(counter.get_total_flops())


def iteration(model: T2IModel, embeds, negative, optimizer, args) -> dict[str, float]:
    """One RL iteration; returns seconds spent sampling and training (synchronised)."""
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    autocast = torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)
    gen = torch.Generator(device=args.device).manual_seed(0)
    sync()
    t0 = time.perf_counter()
    with autocast:
        traj = sample_trajectories(model, [""] * args.batch, num_steps=args.steps, guidance_scale=7.0, eta=1.0,
                                   generator=gen, prompt_embeds=embeds, negative_prompt_embeds=negative)
    sync()
    t1 = time.perf_counter()
    advantages = torch.randn(args.batch, device=args.device)
    for j in torch.randperm(args.steps)[:args.timesteps].tolist():
        with autocast:
            out = rescore_step(model, traj.latents[:, j], traj.latents[:, j + 1], traj.timesteps[j], embeds,
                               negative, guidance_scale=7.0, eta=1.0)
            loss = ppo_clip_loss(advantages, torch.exp(out.log_prob - traj.log_probs[:, j]), 1e-4)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    return {"sample_s": t1 - t0, "train_s": time.perf_counter() - t1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=16, help="samples per GPU (paper: 16)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--timesteps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2, help="measured iterations after 1 warm-up")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--smoke", action="store_true", help="tiny UNet, 2 steps: code-path check on CPU")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.timesteps, args.iters, args.batch = 3, 2, 1, 2
    model, embeds, negative = build(args)
    optimizer = torch.optim.AdamW(model.unet.parameters(), lr=2e-6)
    fwd = unet_forward_flops(model, embeds)
    runs = [iteration(model, embeds, negative, optimizer, args) for _ in range(args.iters + 1)][1:]
    sample_s = min(r["sample_s"] for r in runs)
    train_s = min(r["train_s"] for r in runs)
    flops = fwd * (args.steps + 3 * args.timesteps)
    out = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
           "unet_params_M": round(sum(p.numel() for p in model.unet.parameters()) / 1e6, 1),
           "batch": args.batch, "steps": args.steps, "timesteps": args.timesteps, "bf16": args.bf16,
           "grad_ckpt": args.grad_ckpt, "unet_cfg_forward_gflops": round(fwd / 1e9, 1),
           "sample_s": round(sample_s, 3), "train_s": round(train_s, 3),
           "samples_per_s": round(args.batch / (sample_s + train_s), 3),
           "mfu": round(flops / (sample_s + train_s) / (args.peak_tflops * 1e12), 4), "smoke": args.smoke}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bench_gpu_sd2_{args.device.split(':')[0]}{'_smoke' if args.smoke else ''}.json").write_text(
        json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
