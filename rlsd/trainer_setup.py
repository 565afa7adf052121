"""Building the trainer's parts from a config: accelerator, policy model (full or LoRA), optimizer, export."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from rlsd.config import BUILTIN_MODELS, ModelConfig, RLConfig, TrainConfig
from rlsd.models import T2IModel, build_tiny_pixel_model, build_tiny_sd, export_model, load_model

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def make_accelerator(cfg: RLConfig) -> Any:
    """``accelerate.Accelerator`` with the config's mixed precision (CPU when no CUDA device is visible)."""
    import os

    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ValueError(f"{launched} processes were launched but accelerate sees {accelerator.num_processes}; on a "
                         "CPU-only machine set ACCELERATE_USE_CPU=1 (see configs/accelerate/cpu_2proc.yaml).")
    return accelerator


def load_policy(cfg: ModelConfig, *, seed: int, device: torch.device | str) -> T2IModel:
    """Load the model named by ``cfg.path`` (folder or built-in tiny model) and prepare the UNet for training.

    The UNet stays float32 (master weights; ``train.mixed_precision`` autocasts), frozen parts are cast to
    ``cfg.dtype``. With ``use_lora`` only the LoRA matrices require grad.
    """
    if cfg.path == "tiny-sd":
        model = build_tiny_sd(seed=seed)
    elif cfg.path == "tiny-pixel":
        model = build_tiny_pixel_model(seed=seed, sample_size=16)
    else:
        folder = Path(cfg.path)
        if not folder.is_dir():
            raise FileNotFoundError(f"model.path {folder} does not exist; set model.path to a diffusers model folder "
                                    f"or one of {', '.join(BUILTIN_MODELS)}.")
        model = load_model(folder)
    model.to(device=device)
    for net in (model.text_encoder, model.vae):
        if net is not None:
            if net.dtype != _DTYPES[cfg.dtype]:
                net.to(dtype=_DTYPES[cfg.dtype])
            net.requires_grad_(False).eval()
    unet = model.unet if model.unet.dtype == torch.float32 else model.unet.to(torch.float32)
    if cfg.attention == "default":
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if cfg.use_lora:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS))
    unet.train()
    return model


def trainable_parameters(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters updated by the optimizer (all UNet weights, or the LoRA matrices)."""
    return [p for p in unet.parameters() if p.requires_grad]


def trainable_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State of the trainable parameters only (what a checkpoint must hold), cloned to CPU."""
    names = {n for n, p in unet.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in unet.state_dict().items() if k in names}


def load_trainable_state_dict(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`trainable_state_dict`; raises ValueError if the parameter names differ."""
    names = {n for n, p in unet.named_parameters() if p.requires_grad}
    if set(state) != names:
        missing, extra = sorted(names - set(state))[:3], sorted(set(state) - names)[:3]
        raise ValueError(f"checkpoint weights do not match the model (missing {missing}, unexpected {extra}); "
                         "resume with the same model.path and model.use_lora.")
    unet.load_state_dict(state, strict=False)


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> tuple[Any, Any]:
    """AdamW + a per-iteration linear-warmup LambdaLR schedule."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.adam_weight_decay, eps=cfg.adam_eps)
    warmup = max(cfg.lr_warmup_iters, 0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: min(1.0, (it + 1) / warmup) if warmup else 1.0)
    return optimizer, schedule


def export_policy(model: T2IModel, folder: str | Path) -> None:
    """Write the model in diffusers layout; LoRA adapters are merged into a copy of the UNet first."""
    unet = model.unet
    if getattr(unet, "peft_config", None):
        unet = copy.deepcopy(unet)
        unet.fuse_lora()
        unet.unload_lora()
    export_model(T2IModel(unet.eval(), model.scheduler, model.text_encoder, model.tokenizer, model.vae), folder)
