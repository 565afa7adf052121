"""Prompt-detection matching: the compositional detection score of a caption (paper Eq. 13 analogue).

``caption_match(detections, prompt)`` = mean over the objects named in the prompt of the
confidence of its best-matching detection, with distinct detections for distinct named
objects (best assignment over all pairs). With ``include_relation=True`` the score is
multiplied by 1 if the assigned detections satisfy the relation, else by ``relation_penalty``
(default 0.5, so a correct pair in the wrong arrangement still beats a missing object).
Open colours/shapes ("a circle", "a shape") constrain nothing in that attribute.
"""

from __future__ import annotations

import itertools

from rlsd.shapes.detector import Detection
from rlsd.shapes.grammar import CaptionSpec, parse
from rlsd.shapes.scene import relation_holds

__all__ = ["caption_match", "count_aware_match", "best_assignment", "MAX_DETECTIONS"]

#: detections of an image that the score considers (the detector's first, largest ones)
MAX_DETECTIONS = 6


def best_assignment(detections: list[Detection], spec: CaptionSpec) -> tuple[list[float], list[Detection | None]]:
    """Per named object: confidence (K,) and assigned detection (distinct), maximising the sum."""
    k = len(spec.objects)
    conf = [[d.confidence(o.colour, o.shape) for d in detections] for o in spec.objects]
    best, best_pick = -1.0, [None] * k
    choices = list(range(len(detections))) + [None] * k
    # dict.fromkeys, not set: a set of tuples holding None iterates in an order that changes from process to
    # process (hash(None) is its address before Python 3.12), and ties would then pick different detections.
    for pick in dict.fromkeys(itertools.permutations(choices, k)):
        used = [p for p in pick if p is not None]
        if len(used) != len(set(used)):
            continue
        total = sum(conf[i][p] for i, p in enumerate(pick) if p is not None)
        if total > best:
            best, best_pick = total, list(pick)
    confs = [conf[i][p] if p is not None else 0.0 for i, p in enumerate(best_pick)]
    return confs, [detections[p] if p is not None else None for p in best_pick]


def caption_match(detections: list[Detection], prompt: str, *, include_relation: bool = False,
                  relation_penalty: float = 0.5) -> float:
    """Detection score in [0, 1] of ``prompt`` given one image's detections (see module doc)."""
    spec = parse(prompt)
    confs, assigned = best_assignment(detections[:MAX_DETECTIONS], spec)
    score = sum(confs) / len(confs)
    if include_relation and spec.relation is not None:
        a, b = assigned
        ok = a is not None and b is not None and relation_holds(a.centre, a.size, b.centre, b.size, spec.relation)
        score *= 1.0 if ok else relation_penalty
    return float(score)


def count_aware_match(detections: list[Detection], prompt: str) -> float:
    """The named objects' best-assignment confidences summed over ``max(named, detections)``: extras are misses."""
    spec, detections = parse(prompt), detections[:MAX_DETECTIONS]
    return float(sum(best_assignment(detections, spec)[0]) / max(len(spec.objects), len(detections)))
