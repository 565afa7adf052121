"""Skin-tone statistical-parity reward (paper Sec. 4.3): faces -> skin tone bucket -> -SP per group.

Pipeline per image: detect faces (:class:`FaceDetector`, default OpenCV Haar cascade) -> take
the largest face -> skin pixels of the face crop by a YCrCb rule -> Individual Typology Angle
``ITA = arctan((L* - 50) / b*) * 180 / pi`` from the median CIELAB L*, b* of those pixels -> bucket.

ITA categories (Chardon, Cretois & Hourseau 1991, "Skin colour typology and suntanning pathways",
Int. J. Cosmet. Sci. 13:191-208): very light > 55, light 41-55, intermediate 28-41, tan 10-28,
brown -30-10, dark < -30. Del Bino & Bernerd (2013, Br. J. Dermatol. 169 Suppl 3) relate them to
Fitzpatrick types; we merge the six into four Fitzpatrick-style buckets:

======  ====================================  ===================
bucket  ITA range (degrees)                   Chardon categories
======  ====================================  ===================
0       ITA > 41                              very light + light
1       28 < ITA <= 41                        intermediate
2       10 < ITA <= 28                        tan
3       ITA <= 10                             brown + dark
======  ====================================  ===================

Images without a detected face get bucket -1 and are excluded from p̂; a group with no face at
all gets the maximum penalty (see :mod:`rlsd.rewards.parity`). Skin mask: Cr in [133, 173] and
Cb in [77, 127] (Chai & Ngan 1999); if fewer than 5% of the crop passes, the whole crop is used.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from rlsd.rewards.base import DistributionReward
from rlsd.rewards.parity import statistical_parity
from rlsd.rewards.registry import register_reward

__all__ = ["FaceDetector", "HaarFaceDetector", "ITA_THRESHOLDS", "NUM_BUCKETS", "to_uint8_hwc", "skin_mask",
           "ita_degrees", "ita_bucket", "face_skin_bucket", "SkinToneParityReward"]

ITA_THRESHOLDS = (41.0, 28.0, 10.0)  # bucket boundaries, descending (see table above)
NUM_BUCKETS = 4
NO_FACE = -1


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes ``(x, y, w, h)`` in an RGB uint8 image (H, W, 3)."""


class HaarFaceDetector:
    """OpenCV frontal-face Haar cascade (ships with opencv-python(-headless) < 5)."""

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24,
                 cascade: str = "haarcascade_frontalface_default.xml"):
        import cv2

        path = cv2.data.haarcascades + cascade
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise FileNotFoundError(f"Haar cascade {path} could not be loaded; install opencv-python-headless<5 (5.x ships none)")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def detect(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        import cv2

        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(self.min_size, self.min_size))
        return [tuple(int(v) for v in box) for box in boxes]


def to_uint8_hwc(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 RGB."""
    return (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().copy()


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: YCrCb skin rule on an RGB uint8 crop (H, W, 3)."""
    import cv2

    ycrcb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    return (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)


def ita_degrees(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """ITA in degrees from the median L*, b* (CIELAB, D65) of the masked pixels of an RGB uint8 array."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(rgb).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    if mask is not None:
        lab = lab[mask.reshape(-1)]
    if len(lab) == 0:
        raise ValueError("ita_degrees got an empty pixel set; pass a non-empty mask")
    lightness, b_star = float(np.median(lab[:, 0])), float(np.median(lab[:, 2]))
    return float(np.degrees(np.arctan((lightness - 50.0) / max(b_star, 1e-6))))


def ita_bucket(ita: float) -> int:
    """Bucket 0 (lightest) .. 3 (darkest) of an ITA angle (table in the module docstring)."""
    return int(sum(ita <= t for t in ITA_THRESHOLDS))


def face_skin_bucket(image: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Skin-tone bucket of the face ``box`` in an RGB uint8 image (H, W, 3)."""
    x, y, w, h = box
    crop = image[y:y + h, x:x + w]
    mask = skin_mask(crop)
    return ita_bucket(ita_degrees(crop, mask if mask.mean() >= 0.05 else None))


class SkinToneParityReward(DistributionReward):
    """Every image of a prompt group gets ``-SP`` of the group's skin-tone buckets.

    Info (per image): ``bucket`` (-1 = no face), ``num_faces``, ``statistical_parity`` (of its group).
    """

    name = "skin_tone_parity"

    def __init__(self, detector: FaceDetector | None = None, num_buckets: int = NUM_BUCKETS):
        if num_buckets != NUM_BUCKETS:
            raise ValueError(f"skin_tone_parity uses {NUM_BUCKETS} ITA buckets, got num_buckets={num_buckets}")
        self.detector = detector if detector is not None else HaarFaceDetector()
        self.num_buckets = num_buckets

    def image_buckets(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Buckets (B,) of the largest face per image (-1 if none) and face counts (B,)."""
        buckets, counts = [], []
        for image in to_uint8_hwc(images):
            boxes = self.detector.detect(image)
            counts.append(len(boxes))
            buckets.append(face_skin_bucket(image, max(boxes, key=lambda b: b[2] * b[3])) if boxes else NO_FACE)
        return torch.tensor(buckets), torch.tensor(counts, dtype=torch.float32)

    def score_group(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[float, dict]:
        buckets, counts = self.image_buckets(images)
        sp = statistical_parity(buckets, self.num_buckets, exclude=NO_FACE)
        return 0.0 - sp, {"bucket": buckets.float(), "num_faces": counts, "statistical_parity": sp}


@register_reward("skin_tone_parity")
def skin_tone_parity(**detector_kwargs) -> SkinToneParityReward:
    """``-statistical_parity`` of skin-tone buckets per prompt group; kwargs go to HaarFaceDetector."""
    return SkinToneParityReward(HaarFaceDetector(**detector_kwargs))
