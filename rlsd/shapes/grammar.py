"""ShapesWorld caption grammar: vocabulary, caption specs, ``caption`` / ``parse``.

Grammar (``NP`` = noun phrase)::

    caption  := NP | NP RELATION NP
    NP       := "a" [COLOUR] (SHAPE | "shape")
    COLOUR   := red | green | blue | yellow          (the 4 colour buckets)
    SHAPE    := circle | square | triangle
    RELATION := "left of" | "right of" | "above" | "below" | "next to"

Examples: ``"a red circle"``, ``"a circle"``, ``"a shape"``, ``"a blue shape"``,
``"a blue square left of a yellow triangle"``. Two-object captions name both objects fully.
A relation ``R`` reads "object 0 is R object 1".

Held-out compositions: :func:`is_heldout_composition` marks a deterministic ~20% of all
two-object captions (hash of the caption text). They are never rendered into the pretraining
data and form the ``split="eval"`` of the compositional prompt source.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

__all__ = [
    "COLOURS",
    "SHAPES",
    "RELATIONS",
    "VOCAB_WORDS",
    "ObjectSpec",
    "CaptionSpec",
    "spec_caption",
    "parse",
    "is_heldout_composition",
    "all_two_object_specs",
]

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "next to")
# every word the grammar can produce (the tokenizer vocabulary, without special tokens)
VOCAB_WORDS: tuple[str, ...] = ("a", *COLOURS, *SHAPES, "shape", "left", "right", "of", "above", "below", "next", "to")
HELDOUT_MODULUS = 5  # 1 in HELDOUT_MODULUS two-object captions is held out


@dataclass(frozen=True)
class ObjectSpec:
    """One noun phrase: ``colour`` / ``shape`` are ``None`` when the caption leaves them open."""

    colour: str | None = None
    shape: str | None = None

    def __post_init__(self) -> None:
        if self.colour is not None and self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {COLOURS} or None, got {self.colour!r}")
        if self.shape is not None and self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES} or None, got {self.shape!r}")

    def phrase(self) -> str:
        """Noun phrase, e.g. ``"a red circle"``, ``"a shape"``."""
        words = ["a"] + ([self.colour] if self.colour else []) + [self.shape or "shape"]
        return " ".join(words)


@dataclass(frozen=True)
class CaptionSpec:
    """Parsed caption: 1 or 2 objects; ``relation`` (object 0 R object 1) iff 2 objects."""

    objects: tuple[ObjectSpec, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if len(self.objects) not in (1, 2):
            raise ValueError(f"a caption names 1 or 2 objects, got {len(self.objects)}")
        if (len(self.objects) == 2) != (self.relation is not None):
            raise ValueError("a relation is required for two objects and forbidden for one")
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {self.relation!r}")

    @property
    def fully_specified(self) -> bool:
        return all(o.colour is not None and o.shape is not None for o in self.objects)


def spec_caption(spec: CaptionSpec) -> str:
    """Caption text of a spec: inverse of :func:`parse`."""
    if spec.relation is None:
        return spec.objects[0].phrase()
    return f"{spec.objects[0].phrase()} {spec.relation} {spec.objects[1].phrase()}"


def _parse_phrase(words: list[str], caption: str) -> ObjectSpec:
    if not words or words[0] != "a" or len(words) not in (2, 3):
        raise ValueError(f"caption {caption!r} is not in the ShapesWorld grammar: noun phrases read 'a [colour] shape|circle|square|triangle'")
    colour = words[1] if len(words) == 3 else None
    noun = words[-1]
    if colour is not None and colour not in COLOURS:
        raise ValueError(f"caption {caption!r} has unknown colour {colour!r}; use one of {COLOURS}")
    if noun != "shape" and noun not in SHAPES:
        raise ValueError(f"caption {caption!r} has unknown shape {noun!r}; use 'shape' or one of {SHAPES}")
    return ObjectSpec(colour=colour, shape=None if noun == "shape" else noun)


def parse(caption: str) -> CaptionSpec:
    """Parse a caption of the grammar into a :class:`CaptionSpec` (case and extra spaces ignored).

    Raises:
        ValueError: if the caption is not in the grammar.
    """
    words = caption.lower().split()
    for relation in RELATIONS:
        rel = relation.split()
        for i in range(1, len(words) - len(rel) + 1):
            if words[i : i + len(rel)] == rel:
                left, right = words[:i], words[i + len(rel) :]
                return CaptionSpec((_parse_phrase(left, caption), _parse_phrase(right, caption)), relation)
    return CaptionSpec((_parse_phrase(words, caption),))


def is_heldout_composition(spec: CaptionSpec) -> bool:
    """True for the ~1/5 of two-object captions reserved for evaluation (deterministic hash)."""
    if spec.relation is None:
        return False
    digest = hashlib.sha256(spec_caption(spec).encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_MODULUS == 0


def all_two_object_specs() -> list[CaptionSpec]:
    """Every fully specified two-object caption with two distinct objects (660 specs)."""
    objects = [ObjectSpec(c, s) for c, s in itertools.product(COLOURS, SHAPES)]
    return [
        CaptionSpec((a, b), rel)
        for a, b in itertools.product(objects, objects)
        if a != b
        for rel in RELATIONS
    ]
