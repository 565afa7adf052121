"""Train the ShapesWorld base model (pixel-space UNet + tiny CLIP text encoder) from scratch.

    python -m rlsd.shapes.base_training --out data/shapesworld_base --steps 1100 --seed 0

Denoising loss (v-prediction by default, epsilon as an option) on the biased pretraining data of
:mod:`rlsd.shapes.dataset`, 10% caption dropout (empty caption) for classifier-free guidance,
AdamW with linear warm-up and cosine decay, EMA weights (the shipped weights). Writes the
folder layout of docs/architecture.md (``unet/``, ``scheduler/``, ``text_encoder/``,
``tokenizer/``; no ``vae/``) plus ``loss_log.csv`` and ``MANIFEST.json`` (sha256 of every
weight file, exact command, seed, sampled data shares, downsampled loss curve, wall time).
The folder is written to ``<out>.tmp`` and renamed at the end, never left half-written.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rlsd.pretrain_data import denoising_target
from rlsd.shapes.dataset import ShapesPretrainData
from rlsd.shapes.tokenizer import MODEL_MAX_LENGTH, build_tokenizer, encode_captions

__all__ = ["BaseTrainConfig", "build_components", "denoising_loss", "train", "sha256_file", "main"]

PREDICTION_TYPES = ("v_prediction", "epsilon")


@dataclass
class BaseTrainConfig:
    """Base-training hyper-parameters (every field is recorded in MANIFEST.json)."""

    out: str = "data/shapesworld_base"  # output folder (written atomically)
    steps: int = 1100  # optimizer steps
    seed: int = 0  # model init, data stream and noise
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup: int = 100  # linear warm-up steps, then cosine decay to 10% of lr
    ema_decay: float = 0.995  # EMA of weights; effective decay min(ema_decay, (1+k)/(10+k))
    caption_dropout: float = 0.1  # share of captions replaced by "" (CFG)
    threads: int = 1  # torch CPU threads (1 is fastest on a shared 2-core machine)
    max_minutes: float = 0.0  # wall-clock cap on the loop (0 = none); the manifest records steps_done
    log_every: int = 10  # CSV loss-log period (steps)
    guidance_scale: float = 5.0  # recommended CFG scale for sampling (recorded only)
    init_from: str = ""  # model folder to continue from (its unet/ and text_encoder/); "" = random init
    # v-prediction: with epsilon, x0 = (x_t - sqrt(1-abar) eps) / sqrt(abar) multiplies the eps error by
    # ~13 at t=950 (abar 0.006); the epsilon model sampled noisy, tinted images from pure noise although it
    # denoised cleanly from t <= 700. v keeps the x0 error bounded at high t.
    prediction_type: str = "v_prediction"  # "v_prediction" or "epsilon"


def build_components(vocab_size: int, seed: int, prediction_type: str = "v_prediction"):
    """Random-init ``(unet, text_encoder, scheduler)`` of the ShapesWorld base architecture."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
        # self-attention only at 8x8: at 16x16 it cost ~3x the whole step on CPU
        only_cross_attention=(False, True, False),
    )
    text_config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True, clip_sample_range=1.0,
        set_alpha_to_one=False, prediction_type=prediction_type, timestep_spacing="leading", steps_offset=0,
    )
    return unet, text_encoder, scheduler


def denoising_loss(unet, scheduler, x0: Tensor, embeds: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Denoising MSE: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t ~ U{0..T-1}.

    The target is eps, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0, after ``scheduler.config.prediction_type``.

    Args:
        x0: clean samples (B, 3, H, W) in [-1, 1].
        embeds: text-encoder states (B, L, D).
    """
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    noisy = scheduler.add_noise(x0, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=embeds).sample
    return F.mse_loss(pred, denoising_target(scheduler, x0, noise, t))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lr_factor(step: int, cfg: BaseTrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def _train_loop(cfg, unet, text_encoder, scheduler, tokenizer, data, log_path: Path) -> list[tuple[int, float]]:
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)]
    curve, running = [], []
    with open(log_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr", "elapsed_s"])
        start = time.time()
        for step in tqdm(range(cfg.steps), desc="base training", mininterval=5):
            if cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes:
                break
            images, captions = data.next_batch(cfg.batch_size, gen)
            drop = torch.rand(len(captions), generator=gen) < cfg.caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            embeds = encode_captions(tokenizer, text_encoder, captions)
            loss = denoising_loss(unet, scheduler, images * 2 - 1, embeds, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            _ema_update(ema[0], unet, decay)
            _ema_update(ema[1], text_encoder, decay)
            running.append(loss.item())
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                mean = sum(running) / len(running)
                writer.writerow([step + 1, f"{mean:.6f}", f"{sched.get_last_lr()[0]:.3e}", f"{time.time() - start:.1f}"])
                f.flush()
                curve.append((step + 1, mean))
                running = []
    unet.load_state_dict(ema[0].state_dict())
    text_encoder.load_state_dict(ema[1].state_dict())
    return curve


def _downsample(curve: list[tuple[int, float]], points: int = 100) -> list[list[float]]:
    stride = max(1, math.ceil(len(curve) / points))
    picked = curve[::stride] + ([curve[-1]] if curve and (len(curve) - 1) % stride else [])
    return [[int(s), round(v, 6)] for s, v in picked]


def _load_init(folder: Path, unet, text_encoder, prediction_type: str) -> dict:
    """Copy the weights of ``folder`` into ``unet``/``text_encoder``; returns its manifest summary."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    manifest_path = folder / "MANIFEST.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"init_from folder {folder} has no MANIFEST.json; point it at a folder written by this trainer")
    init_type = DDIMScheduler.from_pretrained(folder / "scheduler").config.prediction_type
    if init_type != prediction_type:
        raise ValueError(f"init_from folder {folder} predicts {init_type!r} but prediction_type is {prediction_type!r}; "
                         f"pass --prediction-type {init_type} to continue it")
    unet.load_state_dict(UNet2DConditionModel.from_pretrained(folder / "unet").state_dict())
    text_encoder.load_state_dict(CLIPTextModel.from_pretrained(folder / "text_encoder").state_dict())
    prev = json.loads(manifest_path.read_text())
    return {k: prev.get(k) for k in ("command", "seed", "steps_done", "final_loss", "wall_time_s", "loss_curve", "data_statistics")}


def train(cfg: BaseTrainConfig, command: str | None = None) -> Path:
    """Train and write the model folder ``cfg.out``; returns its path."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={cfg.steps} batch_size={cfg.batch_size}")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = build_tokenizer()
    unet, text_encoder, scheduler = build_components(len(tokenizer), cfg.seed, cfg.prediction_type)
    init_manifest = None
    if cfg.init_from:
        init_manifest = _load_init(Path(cfg.init_from), unet, text_encoder, cfg.prediction_type)
    data = ShapesPretrainData(seed=cfg.seed)
    start = time.time()
    curve = _train_loop(cfg, unet, text_encoder, scheduler, tokenizer, data, tmp / "loss_log.csv")
    wall = time.time() - start
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    tokenizer.save_pretrained(tmp / "tokenizer")
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        "command": command or " ".join([sys.executable.split("/")[-1], "-m", "rlsd.shapes.base_training", *sys.argv[1:]]),
        "seed": cfg.seed,
        "config": asdict(cfg),
        "guidance_scale": cfg.guidance_scale,
        "sampling": {"num_steps": 50, "eta": 1.0, "guidance_scale": cfg.guidance_scale},
        "tokenizer_max_length": MODEL_MAX_LENGTH,
        "data_statistics": data.summary(),
        "init_from": init_manifest,
        "steps_done": curve[-1][0],
        "final_loss": curve[-1][1],
        "loss_curve": _downsample(curve),
        "wall_time_s": round(wall, 1),
        "torch_version": torch.__version__,
        "sha256": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
    }
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def load_config_file(path: str | Path) -> dict:
    """BaseTrainConfig fields from a YAML file; unknown keys raise ``ValueError``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; see configs/shapes_base.yaml for the format")
    values = yaml.safe_load(path.read_text()) or {}
    unknown = set(values) - set(asdict(BaseTrainConfig()))
    if unknown:
        raise ValueError(f"config file {path} has unknown keys {sorted(unknown)}; valid keys are the BaseTrainConfig fields")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML file of BaseTrainConfig fields (e.g. configs/shapes_base.yaml)")
    pre, _ = parser.parse_known_args(argv)
    defaults = asdict(BaseTrainConfig())
    if pre.config is not None:
        defaults.update(load_config_file(pre.config))
    for name, value in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(BaseTrainConfig, name)), default=value)
    args = vars(parser.parse_args(argv))
    args.pop("config")
    command = "python -m rlsd.shapes.base_training " + " ".join(argv if argv is not None else sys.argv[1:])
    out = train(BaseTrainConfig(**args), command=command)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
