"""ShapesWorld analytic detector, caption matching and the gold quality function."""

from __future__ import annotations

import numpy as np

from rlsd.shapes.detector import detect
from rlsd.shapes.gold import gold_score
from rlsd.shapes.grammar import all_two_object_specs, parse
from rlsd.shapes.match import caption_match
from rlsd.shapes.render import render
from rlsd.shapes.scene import Scene, SceneObject, caption, sample_scene


def test_detector_is_at_least_99_percent_accurate_on_clean_renders():
    rng = np.random.default_rng(123)
    pairs = all_two_object_specs()
    correct, n = 0, 600
    for i in range(n):
        spec = pairs[rng.integers(len(pairs))] if i % 2 else parse("a shape")
        scene = sample_scene(spec, rng)
        got = sorted((d.colour, d.shape) for d in detect(render(scene)))
        correct += got == sorted((o.colour, o.shape) for o in scene.objects)
    assert correct / n >= 0.99


def test_detector_localises_objects():
    scene = Scene((SceneObject("triangle", "yellow", (0.3, 0.7), 0.2),))
    (det,) = detect(render(scene))
    assert det.shape == "triangle" and det.colour == "yellow"
    assert abs(det.centre[0] - 0.3) < 0.03 and abs(det.size - 0.2) < 0.04
    assert det.centre[1] > 0.7  # a triangle's mass centre lies below its box centre


def test_canvas_filling_colour_is_background_not_an_object():
    largest = Scene((SceneObject("circle", "green", (0.5, 0.5), 0.25),))  # the largest object the renderer draws
    assert [(d.colour, d.shape) for d in detect(render(largest))] == [("green", "circle")]
    grey = np.full((3, 32, 32), 0.5)
    tint = grey + np.array([-0.2, 0.25, -0.2])[:, None, None]  # a green cast over the whole canvas
    rng = np.random.default_rng(0)
    green_noise = np.clip(tint + rng.normal(0, 0.15, size=tint.shape), 0, 1)  # what an RL collapse looked like
    assert detect(tint) == []
    assert all(d.area <= 0.3 * 32 * 32 for d in detect(green_noise))
    assert not [d for d in detect(green_noise) if d.colour == "green" and d.area > 100]


def test_caption_match_scores_presence_and_relation():
    scene = Scene((SceneObject("circle", "red", (0.25, 0.5), 0.13), SceneObject("square", "blue", (0.75, 0.5), 0.13)), "left of")
    dets = detect(render(scene))
    assert caption_match(dets, "a red circle left of a blue square", include_relation=True) > 0.9
    assert caption_match(dets, "a red circle right of a blue square", include_relation=True) < 0.5
    assert caption_match(dets, "a red circle right of a blue square") > 0.9  # presence only
    assert 0.4 < caption_match(dets, "a red circle left of a green square") < 0.55  # one of two objects
    assert caption_match(dets, "a shape") > 0.9 and caption_match(dets, "a yellow shape") == 0.0


def test_gold_prefers_clean_matching_images_over_each_degradation():
    rng = np.random.default_rng(0)
    for kind in ("blur", "noise", "desaturate", "offset"):
        clean, degraded = [], []
        for _ in range(20):
            spec = parse("a red circle")
            scene = sample_scene(spec, rng)
            clean.append(gold_score(render(scene), "a red circle")[0])
            bad = sample_scene(spec, rng, degradation=kind)
            degraded.append(gold_score(render(bad, rng), "a red circle")[0])
        assert np.mean(clean) > np.mean(degraded) + 0.1, kind
    scene = sample_scene(parse("a blue square"), rng)
    assert gold_score(render(scene), caption(scene))[0] > gold_score(render(scene), "a red triangle")[0] + 0.3
