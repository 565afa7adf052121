"""Skin-tone parity reward: face detection, ITA ordering, group SP values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from rlsd.rewards import build_reward
from rlsd.rewards.fairness import HaarFaceDetector, SkinToneParityReward, face_skin_bucket, ita_bucket, ita_degrees

# typical skin colours, lightest to darkest (all pass the YCrCb skin rule)
SKIN_RGB = [(255, 224, 196), (241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (90, 56, 37)]


class BoxDetector:
    """Fake detector: one face covering the whole image unless it is pure black."""

    def detect(self, image):
        return [] if image.max() == 0 else [(0, 0, image.shape[1], image.shape[0])]


def _patch(rgb, size=16):
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def _tensor(rgb, size=16):
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, size, size) / 255


def test_astronaut_has_one_face():
    assert len(HaarFaceDetector().detect(data.astronaut())) == 1
    assert HaarFaceDetector().detect(np.zeros((64, 64, 3), np.uint8)) == []


def test_ita_orders_tone_patches_and_buckets():
    itas = [ita_degrees(_patch(c)) for c in SKIN_RGB]
    assert itas == sorted(itas, reverse=True)
    assert [ita_bucket(a) for a in itas] == [0, 0, 1, 2, 3, 3]
    assert [ita_bucket(a) for a in (55.0, 41.0, 40.9, 28.0, 10.0, -40.0)] == [0, 1, 1, 2, 3, 3]
    assert face_skin_bucket(_patch(SKIN_RGB[3]), (0, 0, 16, 16)) == 2


@pytest.mark.parametrize(
    "colours, expected_sp",
    [
        ([0, 2, 3, 4], 0.0),  # one per bucket
        ([0, 0, 1, 1], 0.75),  # all bucket 0
        ([0, 2, 0, 2], 0.25),  # buckets 0 and 1 half each
        ([0, None, 2, None], 0.25),  # faceless images are excluded
        ([None, None, None, None], 0.75),  # no face at all -> maximum penalty
    ],
)
def test_group_statistical_parity(colours, expected_sp):
    images = torch.stack([torch.zeros(3, 16, 16) if c is None else _tensor(SKIN_RGB[c]) for c in colours])
    reward = SkinToneParityReward(detector=BoxDetector())
    rewards, info = reward(images, ["a portrait of a nurse"] * 4, [{"group": 0}] * 4)
    torch.testing.assert_close(rewards, torch.full((4,), -expected_sp))
    assert info["num_faces"].tolist() == [0.0 if c is None else 1.0 for c in colours]
    assert info["bucket"][[c is None for c in colours]].eq(-1).all()


def test_groups_are_scored_separately():
    balanced = [_tensor(SKIN_RGB[c]) for c in (0, 2, 3, 4)]
    biased = [_tensor(SKIN_RGB[5])] * 4
    images = torch.stack(balanced + biased)
    metadata = [{"group": "balanced"}] * 4 + [{"group": "biased"}] * 4
    rewards, info = SkinToneParityReward(detector=BoxDetector())(images, ["p"] * 8, metadata)
    torch.testing.assert_close(rewards, torch.tensor([0.0] * 4 + [-0.75] * 4))
    torch.testing.assert_close(info["statistical_parity"], torch.tensor([0.0] * 4 + [0.75] * 4))


def test_registered_reward_runs_haar_on_photo():
    reward = build_reward("skin_tone_parity")
    assert reward.distribution_level
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)[None]
    rewards, info = reward(photo, ["an astronaut"], [{"group": 0}])
    assert info["num_faces"].item() == 1 and info["bucket"].item() in (0, 1, 2, 3)
    assert rewards.item() == pytest.approx(-0.75)  # one face = one bucket
