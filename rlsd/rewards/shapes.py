"""ShapesWorld rewards mirroring the paper's three tasks (plus the hidden gold score).

================================  =====================================  ======================
name                              paper analogue                         distribution level
================================  =====================================  ======================
``shapes_preference``             ImageReward (learned human preference)  no
``shapes_gold``                   (hidden truth behind the preference)    no
``shapes_detection``              compositional detector reward, Eq. 13   no
``shapes_detection_count_aware``  (evaluation: extra objects as misses)   no
``shapes_color_parity``           skin-tone statistical parity, Eq. 12    yes (``group``)
================================  =====================================  ======================

``shapes_detection``: mean over the objects named in the prompt of the best-matching
detection's confidence (:mod:`rlsd.shapes.match`); with ``include_relation=True`` it is
multiplied by ``relation_penalty`` when the relation is violated (default off, as in Eq. 13,
which scores object presence only).

``shapes_detection_count_aware``: the same confidences summed over ``max(named objects,
detections)`` instead of the named count, so every detected object beyond the named ones counts as
a miss. Eq. 13 ignores extra objects; this evaluation-only variant exposes a policy that draws
third and fourth copies to make a named object likelier to be found (docs/findings.md, the extra-objects
hack of Eq. 13).

``shapes_color_parity``: the colour bucket (4 buckets = COLOURS) of the image's main object,
i.e. the detection best matching the prompt's first object ignoring its colour; images with
no such detection get bucket -1 and are left out of p̂ (:mod:`rlsd.rewards.parity` convention;
a group with no counted image scores the maximum SP), or with ``missing="worst"`` counted as a
maximally unfair share. Every image of a group gets ``-SP``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rlsd.rewards.base import DistributionReward, Reward
from rlsd.rewards.parity import statistical_parity
from rlsd.rewards.registry import register_reward

__all__ = ["ShapesDetectionReward", "ShapesDetectionCountAware", "ShapesGoldReward", "ShapesPreferenceReward", "ShapesColorParity",
           "colour_buckets", "DEFAULT_PREFERENCE_DIR"]

DEFAULT_PREFERENCE_DIR = Path(__file__).resolve().parents[2] / "data" / "shapesworld_preference"
NO_OBJECT = -1


class ShapesDetectionReward(Reward):
    """Compositional detection score in [0, 1] of each image for its prompt."""

    name = "shapes_detection"

    def __init__(self, include_relation: bool = False, relation_penalty: float = 0.5):
        self.include_relation, self.relation_penalty = bool(include_relation), float(relation_penalty)

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        from rlsd.shapes.detector import detect_batch
        from rlsd.shapes.match import caption_match

        dets = detect_batch(images)
        objects = [caption_match(d, p) for d, p in zip(dets, prompts)]
        with_rel = [caption_match(d, p, include_relation=True, relation_penalty=0.0) for d, p in zip(dets, prompts)]
        rel_ok = [float(w > 0 or o == 0) for w, o in zip(with_rel, objects)]
        rewards = [o * (1.0 if ok else self.relation_penalty) if self.include_relation else o for o, ok in zip(objects, rel_ok)]
        info = {"object_score": torch.tensor(objects), "relation_ok": torch.tensor(rel_ok),
                "num_detections": torch.tensor([float(len(d)) for d in dets])}
        return torch.tensor(rewards, dtype=torch.float32), info


class ShapesDetectionCountAware(Reward):
    """Detection score with every detection beyond the named objects counted as a miss (evaluation)."""

    name = "shapes_detection_count_aware"

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        from rlsd.shapes.detector import detect_batch
        from rlsd.shapes.match import MAX_DETECTIONS, count_aware_match

        dets = detect_batch(images)
        rewards = [count_aware_match(d, p) for d, p in zip(dets, prompts)]
        counts = [float(len(d[:MAX_DETECTIONS])) for d in dets]
        return torch.tensor(rewards, dtype=torch.float32), {"num_detections": torch.tensor(counts)}


class ShapesGoldReward(Reward):
    """Hidden gold quality score in [0, 1] (:mod:`rlsd.shapes.gold`), for evaluation."""

    name = "shapes_gold"

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        from rlsd.shapes.gold import gold_batch

        scores, factors = gold_batch(images, prompts)
        return torch.from_numpy(scores).float(), {k: torch.from_numpy(v).float() for k, v in factors.items()}


class ShapesPreferenceReward(Reward):
    """Learned preference score (unbounded) of the shipped model in ``model_dir``."""

    name = "shapes_preference"

    def __init__(self, model_dir: str | Path = DEFAULT_PREFERENCE_DIR):
        from rlsd.shapes.preference import load_preference_model

        self.model_dir = Path(model_dir)
        self.model = load_preference_model(self.model_dir)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        from rlsd.shapes.preference import tokenize

        if images.shape[-2:] != (32, 32):
            raise ValueError(f"shapes_preference scores 32x32 images, got {tuple(images.shape[-2:])}; sample at sample_size 32")
        scores = self.model(images.float().cpu(), tokenize(prompts))
        return scores, {}


def colour_buckets(images: Tensor, prompts: list[str]) -> np.ndarray:
    """Colour bucket (B,) in [0, 4) of each image's main object, or -1 if none is detected."""
    from rlsd.shapes.detector import detect_batch
    from rlsd.shapes.grammar import COLOURS, parse

    out = []
    for dets, prompt in zip(detect_batch(images), prompts):
        target = parse(prompt).objects[0]
        scores = [d.confidence(None, target.shape) for d in dets]
        best = int(np.argmax(scores)) if scores and max(scores) > 0 else None
        out.append(COLOURS.index(dets[best].colour) if best is not None else NO_OBJECT)
    return np.asarray(out, dtype=np.int64)


class ShapesColorParity(DistributionReward):
    """``-SP`` of the main-object colour buckets over each prompt group (Eq. 12 analogue)."""

    name = "shapes_color_parity"

    def __init__(self, credit: str = "group", missing: str = "exclude", presence: float = 0.0):
        from rlsd.rewards.parity import check_missing

        self.credit = self._check_credit(credit)
        self.missing = check_missing(missing)
        if not 0.0 <= float(presence) < float("inf"):
            raise ValueError(f"shapes_color_parity presence must be a finite number >= 0, got {presence}")
        self.presence = float(presence)

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        """The group credit of ``-SP``, plus ``presence`` for every image that holds its main object."""
        rewards, info = super().score(images, prompts, metadata)
        if self.presence:
            present = (info["colour_bucket"] != NO_OBJECT).float()
            rewards = rewards + self.presence * present
            info = {**info, "object_present": present}
        return rewards, info

    def score_group(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[float, dict]:
        from rlsd.shapes.grammar import COLOURS

        buckets = colour_buckets(images, prompts)
        sp = statistical_parity(buckets, len(COLOURS), exclude=NO_OBJECT, missing=self.missing)
        return -sp, {"colour_bucket": torch.from_numpy(buckets).float(), "statistical_parity": sp}


@register_reward("shapes_detection")
def shapes_detection(include_relation: bool = False, relation_penalty: float = 0.5) -> ShapesDetectionReward:
    """Detection reward (Eq. 13 analogue); see the module docstring."""
    return ShapesDetectionReward(include_relation, relation_penalty)


@register_reward("shapes_detection_count_aware")
def shapes_detection_count_aware() -> ShapesDetectionCountAware:
    """Detection score with extra objects counted as misses (evaluation only); see the module docstring."""
    return ShapesDetectionCountAware()


@register_reward("shapes_gold")
def shapes_gold() -> ShapesGoldReward:
    """Hidden gold quality score (evaluation only)."""
    return ShapesGoldReward()


@register_reward("shapes_preference")
def shapes_preference(model_dir: str | Path = DEFAULT_PREFERENCE_DIR) -> ShapesPreferenceReward:
    """Learned preference reward (ImageReward analogue)."""
    return ShapesPreferenceReward(model_dir)


@register_reward("shapes_color_parity")
def shapes_color_parity(credit: str = "group", missing: str = "exclude", presence: float = 0.0) -> ShapesColorParity:
    """Distribution-level colour statistical parity reward (-SP per prompt group).

    ``credit="group"``: every image gets its group's -SP (the paper); ``"leave_one_out"``: its marginal
    contribution -SP(G) + SP(G without it), see :class:`rlsd.rewards.base.DistributionReward`.
    ``missing``: images with no detected main object are left out of p̂ (``"exclude"``, the paper's
    faceless-image convention) or counted as a maximally unfair share (``"worst"``), see :mod:`rlsd.rewards.parity`.
    ``presence``: a separate per-image term added to every image that holds its main object, so that with
    ``missing="exclude"`` (parity over the drawn objects only) drawing nothing is not a way to dodge the parity cost.
    """
    return ShapesColorParity(credit, missing, presence)
