"""Cost model of one RL iteration in the paper's setting (SD2-base, 16 nodes x 8 GPUs, 2048 samples / iteration).

Inputs that are measured here: the SD2-base UNet FLOPs per latent row (``benchmarks/results/sd2_flops.json``,
``sd2_flops.py``, attention matmuls counted) and the VAE decoder FLOPs per 512 px image (counted below with the
same ``FlopCounterMode`` on the meta device). Everything else is an ``ASSUMPTIONS`` entry, printed with the table.
``docs/scaling.md`` explains the rows.

    python benchmarks/scaling_model.py      # prints the table, writes benchmarks/results/scaling_model.json
"""

from __future__ import annotations

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import RESULTS  # noqa: E402  (puts the repo root on sys.path)

ASSUMPTIONS = {
    "samples_per_iter": 2048,          # paper: 16 per GPU x 128 GPUs, one task
    "gpus": 128, "gpus_per_node": 8,
    "ddim_steps": 50, "cfg_rows": 2,   # configs/sd2_paper.yaml: 50 DDIM steps, CFG (cond + uncond rows)
    "trained_timesteps": 5,            # 5 optimizer steps per iteration (one per trained timestep)
    "gradient_checkpointing": True,    # one extra UNet forward per trained row
    "pretrain_batch": 2048,            # L_pre: 16 image-caption pairs per GPU, one UNet row each, own step
    "paper_s_per_iter": 43.6,
    "a100_bf16_peak_flops": 312e12,
    "nvlink_bus_bytes_per_s": 300e9,   # A100 NVLink, per GPU, one direction
    "ib_bytes_per_s_per_gpu": 25e9,    # 8 x 200 Gb/s HDR per node = one 200 Gb/s NIC per GPU
    "reward_vit_params": 304e6, "reward_tokens": 197,  # ImageReward: BLIP ViT-L/16 at 224 px (+ text side)
    "text_encoder_params": 354e6, "text_tokens": 77,   # OpenCLIP ViT-H text tower
    "adamw_bytes_per_param": 28, "hbm_bytes_per_s": 1.5e12,  # fp32 AdamW step (read p, g, m, v; write p, m, v)
    "assumed_mfu": 0.40,
}
SD2_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
               down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
               block_out_channels=[128, 256, 512, 512], sample_size=512)


def vae_flops() -> dict:
    """FLOPs of the SD2 VAE decoder (one 4x64x64 latent -> 512 px) and encoder (one 512 px image), meta device."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**SD2_VAE)
        z, img = torch.randn(1, 4, 64, 64), torch.randn(1, 3, 512, 512)
    out = {}
    for name, fn in (("decode", lambda: vae.decode(z).sample), ("encode", lambda: vae.encode(img).latent_dist.mean)):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            fn()
        out[name] = counter.get_total_flops()
    return out


def ring_allreduce_s(nbytes: float, a: dict) -> dict:
    """Ring all-reduce time: flat over all GPUs at the IB rate, and hierarchical (NVLink reduce-scatter, IB
    all-reduce of a 1/8 shard across nodes, NVLink all-gather). Ring moves 2 (n-1)/n x bytes per GPU."""
    n, g = a["gpus"], a["gpus_per_node"]
    nodes = n // g
    flat = 2 * (n - 1) / n * nbytes / a["ib_bytes_per_s_per_gpu"]
    intra = 2 * (g - 1) / g * nbytes / a["nvlink_bus_bytes_per_s"]
    inter = 2 * (nodes - 1) / nodes * (nbytes / g) / a["ib_bytes_per_s_per_gpu"]
    return {"flat_ring_s": flat, "hierarchical_s": intra + inter, "nvlink_part_s": intra, "ib_part_s": inter}


def model() -> dict:
    a = ASSUMPTIONS
    unet = json.loads((RESULTS / "sd2_flops.json").read_text())
    fwd, fb, params = unet["forward"]["flops"], unet["forward_backward"]["flops"], unet["params"]
    vae = vae_flops()
    s, rows = a["samples_per_iter"], a["cfg_rows"]
    train_rows = s * a["trained_timesteps"] * rows
    flops = {
        "sampling_unet": s * a["ddim_steps"] * rows * fwd,
        "training_unet": train_rows * (fb + (fwd if a["gradient_checkpointing"] else 0)),
        "vae_decode": s * vae["decode"],
        "reward": s * 2 * a["reward_vit_params"] * a["reward_tokens"],
        "text_encoder": s * 2 * 2 * a["text_encoder_params"] * a["text_tokens"],
    }
    rl_total = sum(flops.values())
    pre = a["pretrain_batch"] * (vae["encode"] + fb + (fwd if a["gradient_checkpointing"] else 0)
                                 + 2 * a["text_encoder_params"] * a["text_tokens"])
    per_gpu = rl_total / a["gpus"]
    paper_rate = per_gpu / a["paper_s_per_iter"]
    grads = {dt: ring_allreduce_s(params * nb, a) | {"bytes": params * nb} for dt, nb in (("fp32", 4), ("bf16", 2))}
    adamw_s = params * a["adamw_bytes_per_param"] / a["hbm_bytes_per_s"]
    rate = a["assumed_mfu"] * a["a100_bf16_peak_flops"]
    steps = a["trained_timesteps"]
    design = {
        "compute_s": per_gpu / rate,
        "allreduce_bf16_hier_s": steps * grads["bf16"]["hierarchical_s"],
        "allreduce_fp32_hier_s": steps * grads["fp32"]["hierarchical_s"],
        "adamw_s": steps * adamw_s,
        "pretrain_compute_s": pre / a["gpus"] / rate,
        "pretrain_step_s": grads["fp32"]["hierarchical_s"] + adamw_s,
    }
    design["rl_iteration_s"] = design["compute_s"] + design["allreduce_fp32_hier_s"] + design["adamw_s"]
    design["with_pretrain_s"] = design["rl_iteration_s"] + design["pretrain_compute_s"] + design["pretrain_step_s"]
    return {"assumptions": a, "measured": {"unet_params": params, "unet_forward_flops": fwd,
                                           "unet_forward_backward_flops": fb,
                                           "attention_share": unet["forward"]["attention_share"],
                                           "vae_decode_flops": vae["decode"], "vae_encode_flops": vae["encode"]},
            "flops_per_iter": flops | {"rl_total": rl_total, "pretrain": pre},
            "per_gpu": {"flops_per_iter": per_gpu, "paper_flops_per_s": paper_rate,
                        "paper_mfu_a100_bf16": paper_rate / a["a100_bf16_peak_flops"]},
            "allreduce_per_step": grads, "adamw_step_s": adamw_s, "rlsd_design_a100": design}


def main() -> None:
    r = model()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling_model.json").write_text(json.dumps(r, indent=2) + "\n")
    f, tot = r["flops_per_iter"], r["flops_per_iter"]["rl_total"]
    print("FLOPs per iteration (2048 samples, all GPUs):")
    for k, v in f.items():
        share = f"  {100 * v / tot:5.1f}%" if k not in ("rl_total", "pretrain") else ""
        print(f"  {k:14s} {v:.3e}{share}")
    g = r["per_gpu"]
    print(f"per GPU {g['flops_per_iter']:.3e} FLOP; paper rate {g['paper_flops_per_s'] / 1e12:.1f} TFLOP/s "
          f"= {100 * g['paper_mfu_a100_bf16']:.1f}% of A100 bf16 peak")
    for dt, v in r["allreduce_per_step"].items():
        print(f"all-reduce {dt}: {v['bytes'] / 1e9:.2f} GB/step; flat ring {v['flat_ring_s'] * 1e3:.0f} ms, "
              f"hierarchical {v['hierarchical_s'] * 1e3:.0f} ms (NVLink {v['nvlink_part_s'] * 1e3:.0f} + "
              f"IB {v['ib_part_s'] * 1e3:.0f})")
    for k, v in r["rlsd_design_a100"].items():
        print(f"  {k:24s} {v:7.2f} s")


if __name__ == "__main__":
    main()
