"""trl 0.23.1 ``DDPOTrainer`` as a benchmark worker (runs in the scratch venv that ``bench_vs_trl.py`` builds).

Configured to match the rlsd arm (see ``bench_vs_trl.py``): full fine-tune (no LoRA), fp32, DDIM ``--steps``
with eta 1 and CFG ``--guidance``, ``--samples`` per iteration in sampling batches of ``--sample-batch``,
train batch ``--train-batch`` with CFG in training, ``--timesteps`` of the steps trained, global advantage
normalisation, a synchronous JPEG-size reward. trl accumulates gradients over the trained timesteps of a
train batch (its accelerator's ``gradient_accumulation_steps = train_gradient_accumulation_steps x
num_train_timesteps``), so it takes one optimizer step per train batch: ``samples / train_batch`` per iteration.

    python benchmarks/trl_worker.py --model FOLDER   # then send 'step' / 'quit' lines (worker_loop.py)
"""

from __future__ import annotations

import argparse
import io
import itertools
import tempfile
import warnings

import worker_loop

PROMPTS = ["a photo of a cat", "a red car", "a forest", "a city at night", "a bowl of fruit", "a blue sky",
           "a small boat", "a mountain lake"]


def jpeg_compressibility(images, prompts, metadata):
    """-(JPEG quality-95 size in kB) per image, as ``rlsd.rewards.jpeg`` computes it."""
    import numpy as np
    import torch
    from PIL import Image

    arrays = (images.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    sizes = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=95)
        sizes.append(-buffer.tell() / 1000.0)
    return torch.tensor(sizes), {}


def build_trainer(args: argparse.Namespace, logdir: str):
    from accelerate import PartialState
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    if args.samples % args.sample_batch:
        raise ValueError(f"--samples {args.samples} must be a multiple of --sample-batch {args.sample_batch}.")
    config = DDPOConfig(
        num_epochs=10**6, seed=args.seed, log_with=None, mixed_precision="no", allow_tf32=False, save_freq=10**9,
        project_kwargs={"project_dir": logdir, "logging_dir": logdir}, logdir=logdir,
        sample_num_steps=args.steps, sample_eta=1.0, sample_guidance_scale=args.guidance,
        sample_batch_size=args.sample_batch, sample_num_batches_per_epoch=args.samples // args.sample_batch,
        train_batch_size=args.train_batch, train_gradient_accumulation_steps=1, train_num_inner_epochs=1,
        train_cfg=True, train_timestep_fraction=args.timesteps / args.steps, train_learning_rate=args.lr,
        train_max_grad_norm=1.0, train_clip_range=1e-4, train_adv_clip_max=10.0, train_use_8bit_adam=False,
        per_prompt_stat_tracking=False, async_reward_computation=False)
    pipeline = DefaultDDPOStableDiffusionPipeline(args.model, use_lora=False)
    prompts = itertools.cycle(PROMPTS)
    PartialState()  # trl logs its no-image-hook warning before it creates its Accelerator
    trainer = DDPOTrainer(config, jpeg_compressibility, lambda: (next(prompts), {}), pipeline)  # no image logging
    if trainer.num_train_timesteps != args.timesteps:
        raise ValueError(f"trl trains {trainer.num_train_timesteps} timesteps, not --timesteps {args.timesteps}.")
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="diffusers pipeline folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sample-batch", type=int, default=16)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    worker_loop.set_threads(args.threads)
    warnings.simplefilter("ignore")
    import torch
    import trl

    with tempfile.TemporaryDirectory() as logdir:
        trainer = build_trainer(args, logdir)
        state = {"epoch": 0, "global_step": 0}

        def step() -> dict:
            state["global_step"] = trainer.step(state["epoch"], state["global_step"])
            state["epoch"] += 1
            return {"optimizer_steps": state["global_step"]}

        params = sum(p.numel() for p in trainer.sd_pipeline.unet.parameters())
        worker_loop.serve({"arm": "trl", "trl": trl.__version__, "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "unet_params": params,
                           "num_train_timesteps": trainer.num_train_timesteps,
                           "gradient_accumulation_steps": trainer.accelerator.gradient_accumulation_steps},
                          {"step": step})


if __name__ == "__main__":
    main()
