"""Compositional detector reward (paper Eq. 13).

For a prompt naming objects ``o_1..o_K`` (``"a cat next to a dog"`` -> cat, dog) the reward is the
mean over the prompt's objects of the detector's highest confidence for that object anywhere in
the image::

    r(x, c) = 1/K * sum_k max_{boxes b} p(o_k | x, b)

Objects come from ``metadata[i]["objects"]`` when given, else from parsing the prompt with
:func:`rlsd.prompts.compositional.parse_prompt`. The real detector is OWL-ViT / OWLv2 from a local
transformers folder (text queries = object names, confidence = sigmoid of the class logit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import torch
from torch import Tensor

from rlsd.rewards.base import Reward
from rlsd.rewards.imaging import CLIP_MEAN, CLIP_STD, normalize, pad_to_square, read_json, require_folder
from rlsd.rewards.registry import register_reward

__all__ = ["Detector", "OwlDetector", "OracleDetector", "prompt_objects", "CompositionalReward"]

OWL_LAYOUT = "an OwlViTForObjectDetection / Owlv2ForObjectDetection save_pretrained folder with its CLIP tokenizer files"


class Detector(Protocol):
    def detect(self, images: Tensor, queries: list[list[str]]) -> list[dict[str, float]]:
        """Max confidence in [0, 1] of each queried class per image; images (B, 3, H, W) in [0, 1]."""


class OwlDetector:
    """OWL-ViT or OWLv2 (picked from ``config.json``'s model_type) from a local folder."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu"):
        from transformers import AutoConfig, AutoTokenizer, Owlv2ForObjectDetection, OwlViTForObjectDetection

        folder = require_folder(folder, ("config.json",), OWL_LAYOUT)
        model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
        if model_type not in ("owlvit", "owlv2"):
            raise ValueError(f"{folder}/config.json has model_type {model_type!r}; expected owlvit or owlv2")
        cls = Owlv2ForObjectDetection if model_type == "owlv2" else OwlViTForObjectDetection
        self.model = cls.from_pretrained(folder, local_files_only=True).to(device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        pre = read_json(folder / "preprocessor_config.json")
        self.mean, self.std = tuple(pre.get("image_mean", CLIP_MEAN)), tuple(pre.get("image_std", CLIP_STD))
        self.image_size = self.model.config.vision_config.image_size
        self.max_length = self.model.config.text_config.max_position_embeddings
        self.pad_square = model_type == "owlv2"
        self.device = torch.device(device)

    def _pixels(self, images: Tensor) -> Tensor:
        import torch.nn.functional as F

        images = images.to(self.device, torch.float32)
        if self.pad_square:
            images = pad_to_square(images)
        images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                               align_corners=False).clamp(0, 1)
        return normalize(images, self.mean, self.std)

    @torch.no_grad()
    def detect(self, images: Tensor, queries: list[list[str]]) -> list[dict[str, float]]:
        """Every image is queried with the union of all queries (equal counts per image), then subset."""
        vocab = sorted({q for qs in queries for q in qs})
        if not vocab:
            return [{} for _ in queries]
        tokens = self.tokenizer(vocab * len(queries), padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        out = self.model(input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device),
                         pixel_values=self._pixels(images))
        best = out.logits.sigmoid().amax(dim=1).float().cpu()  # (B, num_patches, Q) -> (B, Q)
        return [{q: float(best[i, vocab.index(q)]) for q in qs} for i, qs in enumerate(queries)]


class OracleDetector:
    """NOT a detector: returns 1.0 for the objects known to be in each image, 0.0 otherwise.

    For demonstrating the reward math without a detector model; ``present[i]`` lists image i's objects.
    """

    def __init__(self, present: Sequence[Sequence[str]]):
        self.present = [set(p) for p in present]

    def detect(self, images: Tensor, queries: list[list[str]]) -> list[dict[str, float]]:
        if len(queries) != len(self.present):
            raise ValueError(f"OracleDetector knows {len(self.present)} images but got {len(queries)}")
        return [{q: float(q in have) for q in qs} for have, qs in zip(self.present, queries)]


def prompt_objects(prompt: str, meta: dict) -> list[str]:
    """The objects a prompt asks for: ``meta["objects"]`` or the parsed two-object prompt."""
    if "objects" in meta:
        return list(meta["objects"])
    from rlsd.prompts.compositional import parse_prompt

    first, _, second = parse_prompt(prompt)
    return [first, second]


class CompositionalReward(Reward):
    """Eq. 13: mean over the prompt's objects of the detector's max confidence for that object."""

    name = "compositional"

    def __init__(self, detector: Detector):
        self.detector = detector

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        objects = [prompt_objects(p, m) for p, m in zip(prompts, metadata)]
        confidences = self.detector.detect(images, objects)
        rewards = torch.tensor([sum(c[o] for o in objs) / len(objs) for objs, c in zip(objects, confidences)])
        info = {"min_object_confidence": torch.tensor([min(c[o] for o in objs) for objs, c in zip(objects, confidences)]),
                "all_detected@0.5": torch.tensor([float(all(c[o] > 0.5 for o in objs)) for objs, c in zip(objects, confidences)])}
        return rewards, info


@register_reward("compositional")
def compositional(model_dir: str, device: str = "cpu") -> CompositionalReward:
    """Compositional reward with an OWL-ViT / OWLv2 detector loaded from ``model_dir``."""
    return CompositionalReward(OwlDetector(model_dir, device))
