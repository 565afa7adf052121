"""Shared tiny-model fixtures for tests (fast, CPU, random weights, no hub).

``tiny_sd``: tiny Stable Diffusion (4x8x8 latents, 3x16x16 images, CLIP text encoder, written tokenizer).
``tiny_pixel_model``: pixel-space 3x16x16 UNet + the same tiny CLIP text encoder/tokenizer, no VAE.
With ``tmp_path`` the model is exported to ``tmp_path/<name>`` and reloaded via ``rlsd.models.load_model``
(the real loading path); without it the in-memory model is returned. Both are deterministic in ``seed``.
"""

from __future__ import annotations

from pathlib import Path

from rlsd.models import T2IModel, build_tiny_pixel_model, build_tiny_sd


def tiny_sd(tmp_path: str | Path | None = None, seed: int = 0) -> T2IModel:
    """Tiny random SD model; exported to and loaded from ``tmp_path/tiny_sd`` when ``tmp_path`` is given."""
    folder = None if tmp_path is None else Path(tmp_path) / "tiny_sd"
    return build_tiny_sd(folder, seed=seed)


def tiny_pixel_model(tmp_path: str | Path | None = None, seed: int = 0) -> T2IModel:
    """Tiny random pixel-space model (3x16x16); exported to ``tmp_path/tiny_pixel`` when given."""
    folder = None if tmp_path is None else Path(tmp_path) / "tiny_pixel"
    return build_tiny_pixel_model(folder, seed=seed, sample_size=16)
