"""Biased ShapesWorld pretraining data (image-caption pairs) for base training and L_pre.

The generator has three deliberate, documented biases, which the base model inherits and the
three RL tasks then correct:

1. **Diversity** — when a caption leaves the colour open (``"a circle"``, ``"a shape"``), the
   colour is drawn from ``colour_bias`` (default 70% red, 10% each other); captions that name a
   colour are uniform over colours. A base model therefore paints "a circle" mostly red.
2. **Compositionality** — only ``p_two_objects`` (10%) of captions name two objects with a
   relation, and the held-out compositions (:func:`rlsd.shapes.grammar.is_heldout_composition`)
   never appear, so the base model often drops an object or the relation.
3. **Quality** — ``p_degraded`` (25%) of renders are degraded (blur / noise / desaturate /
   offset over the border; see :mod:`rlsd.shapes.render`), so the base model sometimes
   produces poor images.

One-object captions: 45% "a {colour} {shape}", 30% "a {shape}", 15% "a shape",
10% "a {colour} shape".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from rlsd.shapes.grammar import COLOURS, SHAPES, CaptionSpec, ObjectSpec, all_two_object_specs, is_heldout_composition, spec_caption
from rlsd.shapes.render import render_batch
from rlsd.shapes.scene import DEGRADATIONS, Scene, sample_scene

__all__ = ["Example", "ShapesPretrainData", "DEFAULT_COLOUR_BIAS", "SINGLE_FORMS"]

DEFAULT_COLOUR_BIAS: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)  # over COLOURS, for open colours
SINGLE_FORMS: dict[str, float] = {"colour+shape": 0.45, "shape": 0.30, "none": 0.15, "colour": 0.10}


@dataclass
class Example:
    """One pretraining example: the caption spec, its text and the sampled scene."""

    spec: CaptionSpec
    caption: str
    scene: Scene


@dataclass
class ShapesPretrainData:
    """Resumable stream of biased (image, caption) batches.

    Batch ``k`` is drawn from ``np.random.default_rng([seed, k])`` (plus one draw from the
    caller's ``torch.Generator`` if given), so ``state_dict()`` = ``{"seed", "batch_index"}``
    fully determines the stream.
    """

    seed: int = 0
    resolution: int = 32
    p_two_objects: float = 0.10
    colour_bias: tuple[float, ...] = DEFAULT_COLOUR_BIAS
    p_degraded: float = 0.25
    batch_index: int = 0
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if len(self.colour_bias) != len(COLOURS) or abs(sum(self.colour_bias) - 1) > 1e-6:
            raise ValueError(f"colour_bias must be {len(COLOURS)} probabilities over {COLOURS} summing to 1")
        for name in ("p_two_objects", "p_degraded"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        self._pairs = [s for s in all_two_object_specs() if not is_heldout_composition(s)]

    def _sample_spec(self, rng: np.random.Generator) -> CaptionSpec:
        if rng.random() < self.p_two_objects:
            return self._pairs[int(rng.integers(len(self._pairs)))]
        form = list(SINGLE_FORMS)[int(rng.choice(len(SINGLE_FORMS), p=list(SINGLE_FORMS.values())))]
        colour = COLOURS[int(rng.integers(len(COLOURS)))] if "colour" in form else None
        shape = SHAPES[int(rng.integers(len(SHAPES)))] if "shape" in form else None
        return CaptionSpec((ObjectSpec(colour, shape),))

    def sample_examples(self, n: int, rng: np.random.Generator) -> list[Example]:
        """Draw ``n`` examples (spec, caption, scene) and update the running ``stats``."""
        out = []
        for _ in range(n):
            spec = self._sample_spec(rng)
            degradation = None
            if rng.random() < self.p_degraded:
                kinds = DEGRADATIONS if spec.relation is None else tuple(d for d in DEGRADATIONS if d != "offset")
                degradation = kinds[int(rng.integers(len(kinds)))]
            scene = sample_scene(spec, rng, colour_probs=np.asarray(self.colour_bias), degradation=degradation)
            out.append(Example(spec, spec_caption(spec), scene))
            self._count(spec, scene)
        return out

    def _count(self, spec: CaptionSpec, scene: Scene) -> None:
        self.stats["examples"] += 1
        self.stats["two_objects"] += spec.relation is not None
        self.stats[f"degraded/{scene.degradation}"] += scene.degradation is not None
        self.stats["degraded"] += scene.degradation is not None
        if spec.relation is None and spec.objects[0].colour is None:
            self.stats["open_colour"] += 1
            self.stats[f"open_colour/{scene.objects[0].colour}"] += 1

    def next_batch(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[str]]:
        """Next batch: images (n, 3, R, R) float32 in [0, 1] and their ``n`` captions."""
        if n < 1:
            raise ValueError(f"batch size n must be >= 1, got {n}")
        key = [self.seed, self.batch_index]
        if generator is not None:
            key.append(int(torch.randint(0, 2**62, (1,), generator=generator)))
        rng = np.random.default_rng(key)
        self.batch_index += 1
        examples = self.sample_examples(n, rng)
        images = render_batch([e.scene for e in examples], rng, resolution=self.resolution)
        return torch.from_numpy(images), [e.caption for e in examples]

    def summary(self) -> dict[str, float]:
        """Shares actually sampled so far: two-object, degraded (by kind), colours of open-colour captions."""
        total = max(self.stats["examples"], 1)
        open_total = max(self.stats["open_colour"], 1)
        out = {"examples": self.stats["examples"], "share_two_objects": self.stats["two_objects"] / total,
               "share_degraded": self.stats["degraded"] / total}
        out.update({f"share_degraded_{d}": self.stats[f"degraded/{d}"] / total for d in DEGRADATIONS})
        out.update({f"open_colour_share_{c}": self.stats[f"open_colour/{c}"] / open_total for c in COLOURS})
        return out

    def state_dict(self) -> dict:
        return {"seed": self.seed, "batch_index": self.batch_index, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"state_dict seed {state.get('seed')} differs from this dataset's seed {self.seed}; build it with the same seed")
        self.batch_index = int(state["batch_index"])
        self.stats = Counter(state.get("stats", {}))
