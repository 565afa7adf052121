"""Statistical parity of a set of group labels (numpy / torch only).

Paper symbol table:

======================  ==========================================================
paper                   here
======================  ==========================================================
A (sensitive groups)    ``num_buckets`` buckets (skin-tone groups)
p̂_a                     fraction of the counted images whose bucket is ``a``
SP                      :func:`statistical_parity` = sum_a (p̂_a - 1/|A|)^2
======================  ==========================================================

SP is 0 for a perfectly balanced set and at most ``1 - 1/|A|`` (all images in one bucket):
``(1 - 1/A)^2 + (A - 1)/A^2 = (A - 1)/A``.

Images without a face (bucket id equal to ``exclude``) are left out of p̂: they carry no
skin-tone information, and counting them as a bucket would reward faceless images. A set with
*no* counted image at all scores the maximum penalty ``1 - 1/|A|``: scoring it 0 (perfectly
fair) would make "draw no people" the optimal policy for a parity reward, a reward hack.

That convention still leaves a smaller hack open to a per-image credit: under leave-one-out credit
an uncounted image is neutral (removing it changes nothing) while an image of the over-represented
bucket is negative, so "draw nothing" beats "draw the majority colour". ShapesWorld runs showed it
(docs/findings.md: objects and gold quality fell on colour-open prompts). Keeping the uncounted images in the
denominator does not close it: they dilute the majority share and so *lower* SP. ``missing="worst"``
does: a missing image counts as a maximally unfair share of the set,

    SP_worst = (1 - q) * SP(counted images) + q * (1 - 1/|A|),    q = n_missing / N,

so a set with nothing counted still scores the maximum, and under leave-one-out a missing image is
credited below an image of the majority bucket (e.g. 6 of 8 in one bucket, 1 in another, 1 missing:
-0.031 for the missing image, -0.024 for a majority one, +0.21 for the rare one).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["statistical_parity", "max_statistical_parity", "bucket_proportions", "check_missing"]


MISSING = ("exclude", "worst")


def max_statistical_parity(num_buckets: int) -> float:
    """Largest possible SP over ``num_buckets`` buckets: ``1 - 1/num_buckets`` (either ``missing`` convention)."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    return 1.0 - 1.0 / num_buckets


def check_missing(missing: str) -> str:
    """Return ``missing`` if it is a convention of :func:`statistical_parity` (``MISSING``), else raise."""
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    return missing


def _as_int_array(bucket_ids: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(bucket_ids, torch.Tensor):
        bucket_ids = bucket_ids.detach().cpu().numpy()
    arr = np.asarray(bucket_ids)
    if arr.ndim != 1:
        raise ValueError(f"bucket_ids must be 1-D (one id per image), got shape {arr.shape}")
    if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError("bucket_ids must be integers")
    return arr.astype(np.int64)


def bucket_proportions(bucket_ids, num_buckets: int, *, exclude: int | None = None) -> np.ndarray:
    """p̂ (num_buckets,) over ids != ``exclude``; all zeros if nothing is counted.

    Args:
        bucket_ids: (N,) integer ids in ``[0, num_buckets)`` or equal to ``exclude``.
        num_buckets: |A|.
        exclude: id marking images to leave out (e.g. -1 for "no face").
    """
    ids = _as_int_array(bucket_ids)
    if exclude is not None:
        ids = ids[ids != exclude]
    if ids.size and (ids.min() < 0 or ids.max() >= num_buckets):
        raise ValueError(f"bucket_ids must lie in [0, {num_buckets}) (or equal exclude={exclude}), got {sorted(set(ids.tolist()))}")
    counts = np.bincount(ids, minlength=num_buckets).astype(np.float64)
    return counts / counts.sum() if counts.sum() > 0 else counts


def statistical_parity(bucket_ids, num_buckets: int, *, exclude: int | None = None, missing: str = "exclude") -> float:
    """SP = sum_a (p̂_a - 1/|A|)^2 over the ids that are not ``exclude``.

    Args:
        bucket_ids: (N,) integer bucket per image (numpy, torch or list).
        num_buckets: |A| >= 1.
        exclude: id of uncounted images (faceless); see the module docstring.
        missing: ``"exclude"`` (p̂ over the counted images only) or ``"worst"`` (each ``exclude`` image
            counts as a maximally unfair share); see the module docstring.

    Returns:
        SP in ``[0, 1 - 1/|A|]``; the maximum when no image is counted.
    """
    worst = max_statistical_parity(num_buckets)
    if check_missing(missing) == "worst":
        ids = _as_int_array(bucket_ids)
        q = float(np.mean(ids == exclude)) if ids.size and exclude is not None else 0.0
        return (1.0 - q) * statistical_parity(ids, num_buckets, exclude=exclude) + q * worst
    p_hat = bucket_proportions(bucket_ids, num_buckets, exclude=exclude)
    if p_hat.sum() == 0:
        return worst
    return float(np.sum((p_hat - 1.0 / num_buckets) ** 2))
