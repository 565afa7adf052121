"""Analytic ShapesWorld detector: hue segmentation + shape classification from the soft mask.

Pipeline for one image (3, H, W) in [0, 1]:

1. Chroma ``c = max(rgb) - min(rgb)`` and hue per pixel. Mixing a palette colour with grey
   (anti-aliasing, desaturation) keeps its hue, so each pixel is assigned to the nearest colour
   bucket by hue; its *coverage* is ``c / chroma(palette colour)`` (clipped to 1).
2. Pixels with coverage >= 0.5 form per-colour masks; 4-connected components are objects.
   Components with soft area < ``min_area`` px are dropped as noise, and components larger than
   ``max_area_frac`` of the canvas (1.5x the largest object the renderer draws, a lone circle of
   half-extent 0.25: 201 px of 1024) as background: a tinted or noisy canvas is not an object.
3. Shape from two scale-free features of the soft coverage inside the component's box:
   ``fill = area / (width * height)`` (square 1, circle pi/4, triangle 1/2; width/height are
   sums of column/row maxima, so anti-aliasing is accounted for) and ``bottom = share of mass
   below the vertical centre of the box`` (triangle 3/4, circle/square 1/2). Shape
   probabilities are a softmax of negative squared distances to those prototypes.

``Detection.confidence(colour, shape)`` = [colour matches] * P(shape) * objectness, with
objectness = min(1, area / ``full_area``); open colour/shape factors are 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rlsd.shapes.grammar import COLOURS, SHAPES
from rlsd.shapes.render import PALETTE

__all__ = ["Detection", "detect", "detect_batch", "colour_hues"]

# (fill, bottom-mass share) prototypes per shape, and the feature scales of the softmax
PROTOTYPES = {"circle": (np.pi / 4, 0.5), "square": (1.0, 0.5), "triangle": (0.5, 0.75)}
FEATURE_SCALE = (0.08, 0.06)


def _hue(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees and chroma of (..., 3) rgb in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    c = mx - mn
    safe = np.where(c > 1e-8, c, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return (60.0 * h) % 360.0, c


def colour_hues() -> tuple[np.ndarray, np.ndarray]:
    """Hue (4,) and chroma (4,) of the palette colours, in COLOURS order."""
    h, c = _hue(np.array([PALETTE[name] for name in COLOURS]))
    return h, c


@dataclass
class Detection:
    """One detected object: colour bucket, shape probabilities, soft area, centre and half-extent.

    ``centre`` and ``size`` are canvas fractions like :class:`rlsd.shapes.scene.SceneObject`.
    """

    colour: str
    shape_probs: dict[str, float]
    area: float
    centre: tuple[float, float]
    size: float
    objectness: float

    @property
    def shape(self) -> str:
        return max(self.shape_probs, key=self.shape_probs.get)

    def confidence(self, colour: str | None, shape: str | None) -> float:
        """Confidence that this detection is "a [colour] [shape]" (None = unconstrained)."""
        if colour is not None and colour != self.colour:
            return 0.0
        p_shape = 1.0 if shape is None else self.shape_probs[shape]
        return float(p_shape * self.objectness)


def _shape_probs(cov: np.ndarray) -> dict[str, float]:
    rows, cols = cov.max(1), cov.max(0)
    width, height = cols.sum(), rows.sum()
    area = cov.sum()
    fill = area / max(width * height, 1e-8)
    ys = np.arange(cov.shape[0]) + 0.5
    top, bottom = ys[rows > 0.5].min() - 0.5, ys[rows > 0.5].max() + 0.5  # box of full rows
    mid = 0.5 * (top + bottom)
    mass_y = cov.sum(1)
    lower = (mass_y * np.clip(ys + 0.5 - mid, 0, 1)).sum()
    bottom_share = lower / max(area, 1e-8)
    logits = {
        s: -(((fill - p[0]) / FEATURE_SCALE[0]) ** 2 + ((bottom_share - p[1]) / FEATURE_SCALE[1]) ** 2) / 2
        for s, p in PROTOTYPES.items()
    }
    m = max(logits.values())
    z = {s: np.exp(v - m) for s, v in logits.items()}
    total = sum(z.values())
    return {s: float(z[s] / total) for s in SHAPES}


def detect(image: np.ndarray, *, min_area: float = 3.0, full_area_frac: float = 0.02,
           max_area_frac: float = 0.3) -> list[Detection]:
    """Detect objects in one image (3, H, W) float in [0, 1] (or (H, W, 3) uint8).

    Args:
        min_area: components with soft area below this many pixels are discarded.
        full_area_frac: soft area (fraction of the canvas) at which objectness reaches 1.
        max_area_frac: components with a larger soft area (fraction of the canvas) are background.
    """
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float64) / 255.0
    elif img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (3, H, W) float or (H, W, 3) uint8, got shape {np.asarray(image).shape}")
    res_y, res_x = img.shape[:2]
    hue, chroma = _hue(img)
    ref_h, ref_c = colour_hues()
    dist = np.abs((hue[..., None] - ref_h + 180.0) % 360.0 - 180.0)
    bucket = dist.argmin(-1)
    cov_all = np.clip(chroma / ref_c[bucket], 0.0, 1.0)
    out = []
    for k, colour in enumerate(COLOURS):
        cov_k = np.where(bucket == k, cov_all, 0.0)
        labels, n = ndimage.label(cov_k >= 0.5)
        for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
            sl = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n_)) for s, n_ in zip(sl, (res_y, res_x)))  # AA rim
            grown = ndimage.binary_dilation(labels[sl] == idx)
            cov = np.where(grown, cov_k[sl], 0.0)
            area = float(cov.sum())
            if area < min_area or area > max_area_frac * res_x * res_y:
                continue
            ys, xs = np.mgrid[sl[0], sl[1]]
            cy, cx = float((cov * (ys + 0.5)).sum() / area), float((cov * (xs + 0.5)).sum() / area)
            half = 0.25 * (cov.max(0).sum() + cov.max(1).sum())
            out.append(Detection(colour, _shape_probs(cov), area, (cx / res_x, cy / res_y), half / res_x,
                                 float(min(1.0, area / (full_area_frac * res_x * res_y)))))
    return sorted(out, key=lambda d: -d.area)


def detect_batch(images, **kwargs) -> list[list[Detection]]:
    """:func:`detect` over a batch (B, 3, H, W) tensor/array in [0, 1]."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    return [detect(a, **kwargs) for a in arr]
