"""What the benchmark scripts share: the repository paths, the ``rlsd`` import path and the medium UNet config.

The scripts run as ``python benchmarks/bench_<name>.py``, so this folder is first on ``sys.path`` and
``import common`` finds this module. Importing it puts the repository root first on ``sys.path`` so that
``rlsd`` imports from a checkout without installing; import it before any ``rlsd`` module.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"  # every script writes its JSON here
sys.path.insert(0, str(REPO))

MEDIUM_UNET = dict(  # ~23M parameters, 4x32x32 latents, cross-attention on the tiny CLIP (dim 32)
    sample_size=32, in_channels=4, out_channels=4, block_out_channels=(128, 256, 256), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
    attention_head_dim=8)

BENCH_UNET = dict(  # ~3.9M parameters, 4x16x16 latents: the model of the trl comparison (bench_vs_trl.py)
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)


def build_bench_folder(folder: Path, seed: int = 0) -> Path:
    """Write the comparison pipeline (random weights, seed ``seed``) in the diffusers layout and return it.

    The tiny SD's VAE, CLIP text encoder and tokenizer with the ``BENCH_UNET``: 16x16 latents, 32x32 images.
    ``StableDiffusionPipeline.from_pretrained(folder)`` and ``rlsd.models.load_model(folder)`` both load it.
    """
    import torch
    from diffusers import UNet2DConditionModel

    from rlsd.models import T2IModel, build_tiny_sd, export_model

    tiny = build_tiny_sd(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**BENCH_UNET).eval()
    export_model(T2IModel(unet, tiny.scheduler, tiny.text_encoder, tiny.tokenizer, tiny.vae), folder)
    return folder
