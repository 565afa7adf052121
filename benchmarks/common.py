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
