"""JPEG (in)compressibility rewards."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from rlsd.rewards import build_reward
from rlsd.rewards.jpeg import jpeg_size_kb


def test_size_matches_pil_and_orders_noise_above_flat():
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 64, 64, generator=g)
    flat = torch.full((1, 3, 64, 64), 0.5)
    images = torch.cat([noise, flat])
    sizes = jpeg_size_kb(images)
    buf = io.BytesIO()
    array = (noise[0] * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="JPEG", quality=95)
    assert sizes[0].item() == pytest.approx(buf.tell() / 1000)
    assert sizes[0] > 3 * sizes[1]
    comp, info = build_reward("jpeg_compressibility")(images, ["x", "y"], [{}, {}])
    incomp, _ = build_reward("jpeg_incompressibility")(images, ["x", "y"], [{}, {}])
    torch.testing.assert_close(comp, -sizes)
    torch.testing.assert_close(incomp, sizes)
    torch.testing.assert_close(info["jpeg_kb"], sizes)
    assert comp[1] > comp[0]
