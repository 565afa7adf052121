"""ShapesWorld scenes: the ``Scene`` dataclass, relation geometry and scene sampling.

Coordinates are fractions of the canvas: ``centre = (x, y)`` with x to the right and y
*downwards* (image convention), ``size`` the half-extent of the object (radius of a circle,
half side of a square, half base / half height of a triangle). A scene is resolution-free;
:func:`rlsd.shapes.render.render` rasterises it.

Relation semantics (object 0 R object 1), checked by :func:`relation_holds`:

=========  ==============================================================
left of    x0 <= x1 - 0.2 and |y0 - y1| < |x0 - x1|
right of   x0 >= x1 + 0.2 and |y0 - y1| < |x0 - x1|
above      y0 <= y1 - 0.2 and |x0 - x1| < |y0 - y1|
below      y0 >= y1 + 0.2 and |x0 - x1| < |y0 - y1|
next to    bounding boxes disjoint, gap along the separating axis <= 0.15
=========  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from rlsd.shapes.grammar import COLOURS, SHAPES, CaptionSpec, ObjectSpec, spec_caption

__all__ = ["SceneObject", "Scene", "relation_holds", "sample_scene", "DEGRADATIONS", "scene_spec", "caption", "with_degradation"]

DEGRADATIONS: tuple[str, ...] = ("blur", "noise", "desaturate", "offset")
SINGLE_SIZE = (0.14, 0.25)  # half-extent range of a lone object
PAIR_SIZE = (0.11, 0.15)  # half-extent range of each object in a two-object scene
MIN_SEPARATION = 0.2  # centre offset needed for left/right/above/below
NEXT_TO_GAP = 0.15  # max box gap for "next to"


@dataclass(frozen=True)
class SceneObject:
    """One object: ``shape`` in SHAPES, ``colour`` in COLOURS, ``centre`` (x, y), ``size`` half-extent."""

    shape: str
    colour: str
    centre: tuple[float, float]
    size: float


@dataclass(frozen=True)
class Scene:
    """1-2 objects; ``relation`` (object 0 R object 1) iff 2 objects; optional ``degradation``.

    ``degradation`` is one of DEGRADATIONS or None. ``"offset"`` is already baked into the object
    centre (part of the object lies outside the canvas); the others are applied by the renderer.
    """

    objects: tuple[SceneObject, ...]
    relation: str | None = None
    degradation: str | None = None


def scene_spec(scene: Scene) -> CaptionSpec:
    """Fully specified caption spec describing ``scene``."""
    return CaptionSpec(tuple(ObjectSpec(o.colour, o.shape) for o in scene.objects), scene.relation)


def caption(scene: Scene) -> str:
    """Fully specified caption of ``scene``, e.g. ``"a red circle next to a green square"``."""
    return spec_caption(scene_spec(scene))


def relation_holds(a_centre, a_size: float, b_centre, b_size: float, relation: str) -> bool:
    """Whether "object a ``relation`` object b" holds for the given centres/half-extents."""
    dx, dy = a_centre[0] - b_centre[0], a_centre[1] - b_centre[1]
    if relation == "left of":
        return dx <= -MIN_SEPARATION and abs(dy) < abs(dx)
    if relation == "right of":
        return dx >= MIN_SEPARATION and abs(dy) < abs(dx)
    if relation == "above":
        return dy <= -MIN_SEPARATION and abs(dx) < abs(dy)
    if relation == "below":
        return dy >= MIN_SEPARATION and abs(dx) < abs(dy)
    if relation == "next to":
        gap_x = abs(dx) - a_size - b_size
        gap_y = abs(dy) - a_size - b_size
        return max(gap_x, gap_y) > 0 and max(gap_x, gap_y) <= NEXT_TO_GAP
    raise ValueError(f"unknown relation {relation!r}")


def _pair_centres(relation: str, sizes: tuple[float, float], rng: np.random.Generator):
    """Centres (a, b) satisfying ``relation``; all objects fully inside the canvas."""
    if relation == "next to":
        gap = rng.uniform(0.03, 0.1)
        span = sizes[0] + sizes[1] + gap
        lo = max(sizes) + 0.03
        along = rng.uniform(lo, 1 - lo - span)
        across = rng.uniform(lo, 1 - lo)
        first, second = (along, along + span) if rng.random() < 0.5 else (along + span, along)
        a, b = (first, across), (second, across)
        return (a, b) if rng.random() < 0.5 else ((a[1], a[0]), (b[1], b[0]))
    near, far = rng.uniform(0.2, 0.33), rng.uniform(0.67, 0.8)
    across = rng.uniform(0.22, 0.78)
    jitter = rng.uniform(-0.05, 0.05, size=2)
    lo_c, hi_c = (near, across + jitter[0]), (far, across + jitter[1])
    if relation in ("left of", "above"):
        a, b = lo_c, hi_c
    else:
        a, b = hi_c, lo_c
    if relation in ("above", "below"):
        a, b = (a[1], a[0]), (b[1], b[0])
    return a, b


def _offset_centre(size: float, rng: np.random.Generator) -> tuple[float, float]:
    """Centre pushing 30-50% of the object's extent over one canvas border."""
    outside = rng.uniform(0.3, 0.5)
    edge = size * (1 - 2 * outside)
    other = rng.uniform(size, 1 - size)
    side = int(rng.integers(4))
    coord = edge if side % 2 == 0 else 1 - edge
    return (coord, other) if side < 2 else (other, coord)


def sample_scene(
    spec: CaptionSpec,
    rng: np.random.Generator,
    *,
    colour_probs: np.ndarray | None = None,
    degradation: str | None = None,
) -> Scene:
    """Sample a scene matching ``spec``; open colours are drawn from ``colour_probs`` (default uniform).

    Args:
        spec: caption spec; ``None`` fields are filled at random.
        rng: numpy generator (the only source of randomness).
        colour_probs: (4,) probabilities over COLOURS for unspecified colours.
        degradation: one of DEGRADATIONS or None; ``"offset"`` only for one-object scenes.
    """
    if degradation is not None and degradation not in DEGRADATIONS:
        raise ValueError(f"degradation must be one of {DEGRADATIONS} or None, got {degradation!r}")
    if degradation == "offset" and spec.relation is not None:
        raise ValueError("degradation 'offset' applies to one-object scenes only (it could break the relation)")
    probs = np.full(len(COLOURS), 1 / len(COLOURS)) if colour_probs is None else np.asarray(colour_probs, float)
    kinds = []
    for obj in spec.objects:
        colour = obj.colour or COLOURS[int(rng.choice(len(COLOURS), p=probs))]
        shape = obj.shape or SHAPES[int(rng.integers(len(SHAPES)))]
        kinds.append((shape, colour))
    if spec.relation is None:
        size = rng.uniform(*SINGLE_SIZE)
        if degradation == "offset":
            centre = _offset_centre(size, rng)
        else:
            centre = tuple(rng.uniform(size + 0.02, 1 - size - 0.02, size=2))
        objects = (SceneObject(kinds[0][0], kinds[0][1], (float(centre[0]), float(centre[1])), float(size)),)
        return Scene(objects, None, degradation)
    sizes = (float(rng.uniform(*PAIR_SIZE)), float(rng.uniform(*PAIR_SIZE)))
    centres = _pair_centres(spec.relation, sizes, rng)
    objects = tuple(
        SceneObject(k[0], k[1], (float(c[0]), float(c[1])), s) for k, c, s in zip(kinds, centres, sizes)
    )
    return Scene(objects, spec.relation, degradation)


def with_degradation(scene: Scene, degradation: str | None) -> Scene:
    """Copy of ``scene`` with another renderer-side degradation (not ``"offset"``)."""
    if degradation == "offset":
        raise ValueError("use sample_scene(..., degradation='offset') to move an object over the border")
    return replace(scene, degradation=degradation)
