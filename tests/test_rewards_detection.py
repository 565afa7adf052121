"""Compositional detector reward: Eq. 13 math with a fake detector, OWL-ViT path on a tiny random model."""

from __future__ import annotations

import pytest
import torch

from rlsd.rewards import build_reward
from rlsd.rewards.detection import CompositionalReward, OracleDetector, OwlDetector
from rlsd.rewards.tiny import build_tiny_owlvit_folder


class TableDetector:
    """Returns fixed confidences per object name, records the queries."""

    def __init__(self, table):
        self.table, self.seen = table, None

    def detect(self, images, queries):
        self.seen = queries
        return [{q: self.table[q] for q in qs} for qs in queries]


def test_eq13_mean_of_max_confidences():
    detector = TableDetector({"cat": 0.9, "dog": 0.3, "hot dog": 0.1, "ice cream": 0.7})
    reward = CompositionalReward(detector)
    prompts = ["a cat next to a dog", "a hot dog on side of an ice cream", "a dog and a cat"]
    rewards, info = reward(torch.rand(3, 3, 8, 8), prompts, [{}, {}, {}])
    torch.testing.assert_close(rewards, torch.tensor([0.6, 0.4, 0.6]))
    torch.testing.assert_close(info["min_object_confidence"], torch.tensor([0.3, 0.1, 0.3]))
    assert detector.seen == [["cat", "dog"], ["hot dog", "ice cream"], ["dog", "cat"]]
    rewards, _ = reward(torch.rand(1, 3, 8, 8), ["anything"], [{"objects": ["cat", "ice cream", "dog"]}])
    assert rewards.item() == pytest.approx((0.9 + 0.7 + 0.3) / 3)


def test_oracle_matching_vs_mismatching():
    reward = CompositionalReward(OracleDetector([["cat", "dog"], ["cat"]]))
    rewards, info = reward(torch.rand(2, 3, 8, 8), ["a cat and a dog", "a cat and a dog"], [{}, {}])
    assert rewards.tolist() == [1.0, 0.5] and info["all_detected@0.5"].tolist() == [1.0, 0.0]


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    return build_tiny_owlvit_folder(tmp_path_factory.mktemp("owl"), seed=0)


def test_owl_detector_tiny_model(owl_dir):
    detector = OwlDetector(owl_dir)
    images = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    out = detector.detect(images, [["cat", "dog"], ["dog"]])
    assert set(out[0]) == {"cat", "dog"} and set(out[1]) == {"dog"}
    assert all(0.0 <= v <= 1.0 for d in out for v in d.values())
    # the union-of-queries batching equals querying each image alone
    alone = detector.detect(images[1:], [["dog"]])
    assert alone[0]["dog"] == pytest.approx(out[1]["dog"], abs=1e-5)
    reward = build_reward({"name": "compositional", "model_dir": str(owl_dir)})
    rewards, _ = reward(images, ["a cat and a dog", "a dog near a cat"], [{}, {}])
    assert rewards[0].item() == pytest.approx((out[0]["cat"] + out[0]["dog"]) / 2, abs=1e-5)


def test_owl_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json; expected an OwlViTForObjectDetection"):
        OwlDetector(tmp_path)
