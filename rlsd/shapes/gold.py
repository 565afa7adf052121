"""Hidden "gold" quality function of ShapesWorld (the ground truth behind the preference reward).

``gold_score(image, prompt)`` in [0, 1] is ``0.4 * match + 0.6 * quality`` with

==============  ==================================================================
match           detection score of the prompt *including* the relation
                (:func:`rlsd.shapes.match.caption_match`, relation factored in)
sharpness       mean g of the top quarter of edge coverage-gradient magnitudes (central
                differences > 0.05; clean edge ~0.5, blurred ~0.2), ``clip((g - 0.2) / 0.25)``
cleanliness     ``exp(-(r / 0.04)^2)`` with r the std of the image minus its 3x3 median
                (pixel noise)
inside          1 - share of object coverage lying on the 1-px canvas border x 4
saturation      max coverage-weighted chroma / palette chroma (desaturated ~0.3)
quality         mean of sharpness, cleanliness, inside, saturation
==============  ==================================================================

The learned ``shapes_preference`` reward is trained on pairs labelled by this function and
only approximates it; ``shapes_gold`` exposes it for evaluation, so over-optimisation of the
learned proxy is visible as a growing proxy-gold gap.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rlsd.shapes.detector import _hue, colour_hues, detect
from rlsd.shapes.match import caption_match

__all__ = ["quality_factors", "gold_score", "gold_batch"]


def _as_hwc(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    return img.transpose(1, 2, 0).astype(np.float64) if img.shape[0] == 3 else img.astype(np.float64)


def quality_factors(image) -> dict[str, float]:
    """Prompt-free quality factors in [0, 1] of one image (3, H, W) float or (H, W, 3) uint8."""
    img = _as_hwc(image)
    hue, chroma = _hue(img)
    ref_h, ref_c = colour_hues()
    bucket = np.abs((hue[..., None] - ref_h + 180.0) % 360.0 - 180.0).argmin(-1)
    cov = np.clip(chroma / ref_c[bucket], 0.0, 1.0)
    gy, gx = np.gradient(cov)
    grad = np.sort(np.hypot(gx, gy)[np.hypot(gx, gy) > 0.05])
    top = grad[-max(1, grad.size // 4):] if grad.size else np.zeros(1)
    sharp = float(np.clip((top.mean() - 0.2) / 0.25, 0.0, 1.0))
    resid = img - ndimage.median_filter(img, size=(3, 3, 1), mode="nearest")
    clean = float(np.exp(-((resid.std() / 0.04) ** 2)))
    border = np.ones_like(cov, dtype=bool)
    border[1:-1, 1:-1] = False
    total = cov.sum()
    inside = float(np.clip(1.0 - 4.0 * cov[border].sum() / total, 0.0, 1.0)) if total > 1.0 else 0.0
    saturation = float(np.clip(np.percentile(cov, 99.5) / 0.95, 0.0, 1.0))
    return {"sharpness": sharp, "cleanliness": clean, "inside": inside, "saturation": saturation}


def gold_score(image, prompt: str) -> tuple[float, dict[str, float]]:
    """Gold score in [0, 1] and its factors for one image and its prompt."""
    factors = quality_factors(image)
    quality = float(np.mean(list(factors.values())))
    match = caption_match(detect(image), prompt, include_relation=True)
    factors.update(quality=quality, match=match)
    return 0.4 * match + 0.6 * quality, factors


def gold_batch(images, prompts: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`gold_score` over a batch (B, 3, H, W) in [0, 1]; returns scores (B,) and factors (B,) each."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    scores, infos = [], []
    for img, prompt in zip(arr, prompts):
        s, f = gold_score(img, prompt)
        scores.append(s)
        infos.append(f)
    keys = infos[0].keys() if infos else []
    return np.asarray(scores, dtype=np.float64), {k: np.asarray([f[k] for f in infos]) for k in keys}
