"""Torch-only image preprocessing and helpers shared by the model-based rewards (no torchvision)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CLIP_MEAN", "CLIP_STD", "resize_center_crop", "pad_to_square", "normalize", "require_folder", "read_json"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_center_crop(images: Tensor, size: int) -> Tensor:
    """Resize the short side to ``size`` (bicubic, antialiased) then center-crop ``size x size``.

    Args:
        images: (B, 3, H, W) float in [0, 1].
    Returns:
        (B, 3, size, size) float in [0, 1] (bicubic overshoot clamped).
    """
    _, _, height, width = images.shape
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[:, :, top:top + size, left:left + size].clamp(0, 1)


def pad_to_square(images: Tensor, value: float = 0.5) -> Tensor:
    """Pad (B, 3, H, W) at the bottom/right to a square with ``value`` (OWLv2 convention)."""
    _, _, height, width = images.shape
    side = max(height, width)
    return F.pad(images, (0, side - width, 0, side - height), value=value)


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``(images - mean) / std`` per channel; images (B, 3, H, W)."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def require_folder(folder: str | Path, files: tuple[str, ...], layout: str) -> Path:
    """Return ``folder`` as a Path; FileNotFoundError naming the first missing file and the expected layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"reward model folder {folder} does not exist; expected {layout}")
    for name in files:
        if not (folder / name).exists():
            raise FileNotFoundError(f"reward model folder {folder} has no {name}; expected {layout}")
    return folder


def read_json(path: Path) -> dict:
    """Parsed JSON file, or {} if it does not exist."""
    return json.loads(path.read_text()) if path.exists() else {}
