"""ShapesWorld prompt sources, one per RL task.

=========================  ====================================================================
``shapes_underspecified``  diversity task: captions that leave the colour open ("a circle",
                           "a square", "a triangle", "a shape"); the base model's red bias shows
``shapes_compositional``   two objects with a relation; ``split="train"`` uses the compositions
                           of the pretraining data, ``split="eval"`` the ~20% held-out ones
                           (:func:`rlsd.shapes.grammar.is_heldout_composition`), never trained on
``shapes_quality``         general captions for the preference task: all 20 one-object captions
                           (plus the training two-object captions if ``include_two_objects``)
=========================  ====================================================================
"""

from __future__ import annotations

from rlsd.prompts.base import PromptSource, register_prompt_source
from rlsd.shapes.grammar import COLOURS, SHAPES, CaptionSpec, ObjectSpec, all_two_object_specs, is_heldout_composition, spec_caption

__all__ = ["UNDERSPECIFIED_PROMPTS", "compositional_prompts", "single_object_prompts",
           "ShapesUnderspecifiedSource", "ShapesCompositionalSource", "ShapesQualitySource"]

UNDERSPECIFIED_PROMPTS: tuple[str, ...] = ("a circle", "a square", "a triangle", "a shape")


def compositional_prompts(split: str) -> list[str]:
    """Two-object captions of ``split`` ("train": 4/5 of the 660, "eval": the held-out 1/5)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    want_heldout = split == "eval"
    return [spec_caption(s) for s in all_two_object_specs() if is_heldout_composition(s) == want_heldout]


def single_object_prompts() -> list[str]:
    """All 20 one-object captions: colour in COLOURS or open, shape in SHAPES or open."""
    return [spec_caption(CaptionSpec((ObjectSpec(c, s),))) for c in (*COLOURS, None) for s in (*SHAPES, None)]


class ShapesUnderspecifiedSource(PromptSource):
    """Colour-open captions (diversity / colour-parity task)."""

    name = "shapes_underspecified"

    def __init__(self, seed: int = 0, prompts: list[str] | None = None, shuffle: bool = True):
        super().__init__(list(prompts or UNDERSPECIFIED_PROMPTS), seed=seed, shuffle=shuffle)


class ShapesCompositionalSource(PromptSource):
    """Two-object relation captions, train or held-out eval compositions."""

    name = "shapes_compositional"

    def __init__(self, split: str = "train", seed: int = 0, shuffle: bool = True):
        self.split = split
        super().__init__(compositional_prompts(split), seed=seed, shuffle=shuffle)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "split": self.split}


class ShapesQualitySource(PromptSource):
    """General captions for the preference (quality) task.

    ``colour_open=False`` drops the colour-open captions of the diversity task, as the paper's
    preference prompts (DiffusionDB) and fairness prompts (occupations) are different sets: a
    learned preference for one colour then no longer acts on the diversity prompts directly.
    """

    name = "shapes_quality"

    def __init__(self, seed: int = 0, include_two_objects: bool = False, colour_open: bool = True, shuffle: bool = True):
        prompts = [p for p in single_object_prompts() if colour_open or p not in UNDERSPECIFIED_PROMPTS]
        prompts += compositional_prompts("train") if include_two_objects else []
        super().__init__(prompts, seed=seed, shuffle=shuffle)


register_prompt_source("shapes_underspecified")(ShapesUnderspecifiedSource)
register_prompt_source("shapes_compositional")(ShapesCompositionalSource)
register_prompt_source("shapes_quality")(ShapesQualitySource)
