"""ShapesWorld renderer (numpy only): anti-aliased shapes on a neutral grey canvas.

Anti-aliasing by 4x4 supersampling of the coverage mask. Degradations (quality bias of the
pretraining data, see :mod:`rlsd.shapes.dataset`):

==========  ===================================================================
blur        separable Gaussian blur, sigma 0.9-1.6 px (at 32 px)
noise       additive Gaussian pixel noise, std 0.07-0.14
desaturate  colours mixed 55-80% towards their grey luminance
offset      (scene level) 30-50% of the object's extent lies outside the canvas
==========  ===================================================================
"""

from __future__ import annotations

import numpy as np

from rlsd.shapes.scene import Scene, SceneObject

__all__ = ["PALETTE", "BACKGROUND", "render", "render_batch", "coverage"]

# RGB in [0, 1] of each colour bucket, and of the background
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.14),
    "green": (0.15, 0.70, 0.25),
    "blue": (0.16, 0.32, 0.88),
    "yellow": (0.93, 0.82, 0.12),
}
BACKGROUND: tuple[float, float, float] = (0.5, 0.5, 0.5)
SUPERSAMPLE = 4


def coverage(obj: SceneObject, resolution: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction (H, W) in [0, 1] of each pixel covered by ``obj`` (H = W = resolution)."""
    n = resolution * supersample
    coords = (np.arange(n) + 0.5) / n
    x, y = coords[None, :], coords[:, None]
    cx, cy = obj.centre
    s = obj.size
    if obj.shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= s**2
    elif obj.shape == "square":
        half = 0.85 * s  # equal-area-ish with the circle
        inside = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    elif obj.shape == "triangle":
        # apex up at (cx, cy - s), base from (cx - s, cy + s) to (cx + s, cy + s)
        t = (y - (cy - s)) / (2 * s)  # 0 at apex, 1 at base
        inside = (t >= 0) & (t <= 1) & (np.abs(x - cx) <= t * s)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    return inside.reshape(resolution, supersample, resolution, supersample).mean(axis=(1, 3))


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = sum(k[i] * pad[i : i + img.shape[0], :, :] for i in range(len(k)))
    return sum(k[i] * rows[:, i : i + img.shape[1], :] for i in range(len(k)))


def _degrade(img: np.ndarray, kind: str, rng: np.random.Generator, resolution: int) -> np.ndarray:
    if kind == "blur":
        return _gaussian_blur(img, rng.uniform(0.9, 1.6) * resolution / 32)
    if kind == "noise":
        return img + rng.normal(0.0, rng.uniform(0.07, 0.14), size=img.shape)
    if kind == "desaturate":
        grey = img @ np.array([0.299, 0.587, 0.114])
        mix = rng.uniform(0.55, 0.8)
        return (1 - mix) * img + mix * grey[..., None]
    return img  # "offset" lives in the scene geometry


def render(scene: Scene, rng: np.random.Generator | None = None, *, resolution: int = 32) -> np.ndarray:
    """Rasterise ``scene`` to a uint8 image (resolution, resolution, 3).

    Deterministic given the scene and the state of ``rng`` (only blur/noise/desaturate draw from
    it; a clean scene ignores it). Objects are painted in order (object 1 over object 0).
    """
    img = np.empty((resolution, resolution, 3))
    img[:] = BACKGROUND
    for obj in scene.objects:
        cov = coverage(obj, resolution)[..., None]
        img = (1 - cov) * img + cov * np.asarray(PALETTE[obj.colour])
    if scene.degradation is not None:
        if rng is None:
            raise ValueError(f"scene has degradation {scene.degradation!r}; pass rng=np.random.default_rng(seed) to render it")
        img = _degrade(img, scene.degradation, rng, resolution)
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def render_batch(scenes: list[Scene], rng: np.random.Generator | None = None, *, resolution: int = 32) -> np.ndarray:
    """Render scenes to float32 (B, 3, H, W) in [0, 1] (the inter-module image convention)."""
    imgs = np.stack([render(s, rng, resolution=resolution) for s in scenes]) if scenes else np.zeros((0, resolution, resolution, 3), np.uint8)
    return imgs.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
