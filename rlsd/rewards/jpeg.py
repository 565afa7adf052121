"""JPEG (in)compressibility rewards from DDPO: -kB / +kB of the image saved as JPEG quality 95."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import Tensor

from rlsd.rewards.base import Reward
from rlsd.rewards.registry import register_reward

__all__ = ["jpeg_size_kb", "JpegReward"]


def jpeg_size_kb(images: Tensor, quality: int = 95) -> Tensor:
    """Size in kB (1000 bytes) of each image encoded by PIL as JPEG.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        quality: PIL JPEG quality.

    Returns:
        (B,) float32 sizes in kB.
    """
    from PIL import Image

    arrays = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    sizes = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32)


class JpegReward(Reward):
    """``sign * kB``: sign -1 rewards compressible images, +1 incompressible ones."""

    def __init__(self, sign: float, name: str, quality: int = 95):
        self.sign, self.name, self.quality = float(sign), name, int(quality)

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        size_kb = jpeg_size_kb(images, self.quality)
        return self.sign * size_kb, {"jpeg_kb": size_kb}


@register_reward("jpeg_compressibility")
def jpeg_compressibility(quality: int = 95) -> JpegReward:
    """Reward = -(JPEG size in kB)."""
    return JpegReward(-1.0, "jpeg_compressibility", quality)


@register_reward("jpeg_incompressibility")
def jpeg_incompressibility(quality: int = 95) -> JpegReward:
    """Reward = +(JPEG size in kB)."""
    return JpegReward(1.0, "jpeg_incompressibility", quality)
