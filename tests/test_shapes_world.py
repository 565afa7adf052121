"""ShapesWorld renderer, grammar, scenes, tokenizer and biased pretraining data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlsd.shapes.dataset import ShapesPretrainData
from rlsd.shapes.grammar import (CaptionSpec, ObjectSpec, all_two_object_specs, is_heldout_composition, parse,
                                 spec_caption)
from rlsd.shapes.render import PALETTE, render, render_batch
from rlsd.shapes.scene import DEGRADATIONS, Scene, SceneObject, caption, relation_holds, sample_scene, scene_spec


def _random_specs(rng, n):
    pairs = all_two_object_specs()
    return [pairs[rng.integers(len(pairs))] if i % 2 else parse("a shape") for i in range(n)]


def test_render_is_deterministic_given_seed():
    rng = np.random.default_rng(3)
    scenes = [sample_scene(s, rng, degradation=d) for s, d in zip(_random_specs(rng, 6), ["blur", "noise", "desaturate", None, "noise", None])]
    a = [render(s, np.random.default_rng(7)) for s in scenes]
    b = [render(s, np.random.default_rng(7)) for s in scenes]
    assert all(x.dtype == np.uint8 and x.shape == (32, 32, 3) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(render(scenes[1], np.random.default_rng(7)), render(scenes[1], np.random.default_rng(8)))


def test_render_paints_the_object_colour_antialiased():
    scene = Scene((SceneObject("square", "blue", (0.5, 0.5), 0.2),))
    img = render(scene).astype(float) / 255
    assert np.allclose(img[16, 16], PALETTE["blue"], atol=1 / 255)
    assert np.allclose(img[1, 1], (0.5, 0.5, 0.5), atol=1 / 255)
    circle = render(Scene((SceneObject("circle", "red", (0.5, 0.5), 0.3),))).astype(float)
    partial = (circle[..., 0] > 130) & (circle[..., 0] < 215)  # between background and red: AA rim
    assert partial.sum() > 10


@pytest.mark.parametrize("text", ["a red circle", "a circle", "a shape", "a blue shape",
                                  "a blue square left of a yellow triangle", "a red circle next to a green square"])
def test_parse_round_trips_grammar_examples(text):
    assert spec_caption(parse(text)) == text


@pytest.mark.parametrize("bad", ["a purple circle", "the red circle", "a red circle beside a square", "", "red circle"])
def test_parse_rejects_captions_outside_the_grammar(bad):
    with pytest.raises(ValueError):
        parse(bad)


def test_captions_agree_with_scenes():
    rng = np.random.default_rng(0)
    for spec in _random_specs(rng, 300):
        scene = sample_scene(spec, rng)
        assert parse(caption(scene)) == scene_spec(scene)
        for want, got in zip(spec.objects, scene.objects):
            assert want.colour in (None, got.colour) and want.shape in (None, got.shape)
            x, y = got.centre
            assert got.size <= x <= 1 - got.size and got.size <= y <= 1 - got.size  # fully inside
        if spec.relation:
            a, b = scene.objects
            assert relation_holds(a.centre, a.size, b.centre, b.size, spec.relation), caption(scene)


def test_relations_are_mutually_consistent():
    assert relation_holds((0.2, 0.5), 0.1, (0.8, 0.5), 0.1, "left of")
    assert not relation_holds((0.2, 0.5), 0.1, (0.8, 0.5), 0.1, "right of")
    assert relation_holds((0.5, 0.2), 0.1, (0.5, 0.8), 0.1, "above")  # y grows downwards
    assert relation_holds((0.5, 0.8), 0.1, (0.5, 0.2), 0.1, "below")
    assert relation_holds((0.4, 0.5), 0.1, (0.65, 0.5), 0.1, "next to")
    assert not relation_holds((0.1, 0.5), 0.1, (0.9, 0.5), 0.1, "next to")


def test_offset_degradation_crosses_the_border():
    rng = np.random.default_rng(1)
    for _ in range(50):
        obj = sample_scene(parse("a square"), rng, degradation="offset").objects[0]
        assert min(obj.centre) < obj.size or max(obj.centre) > 1 - obj.size
    with pytest.raises(ValueError):
        sample_scene(parse("a red circle above a blue square"), rng, degradation="offset")


def test_heldout_compositions_are_a_fifth_and_absent_from_pretraining_data():
    specs = all_two_object_specs()
    held = {spec_caption(s) for s in specs if is_heldout_composition(s)}
    assert len(specs) == 660 and 0.15 < len(held) / len(specs) < 0.25
    data = ShapesPretrainData(seed=1)
    captions = [e.caption for e in data.sample_examples(3000, np.random.default_rng(0))]
    two = [c for c in captions if parse(c).relation]
    assert len(two) > 200 and not held.intersection(two)


def test_pretraining_data_has_the_documented_biases():
    data = ShapesPretrainData(seed=0)
    for _ in range(4):
        images, captions = data.next_batch(500)
    assert images.shape == (500, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and len(captions) == 500
    stats = data.summary()
    assert abs(stats["share_two_objects"] - 0.10) < 0.03
    assert abs(stats["share_degraded"] - 0.25) < 0.04
    assert abs(stats["open_colour_share_red"] - 0.70) < 0.05
    assert all(stats[f"share_degraded_{d}"] > 0.03 for d in DEGRADATIONS)


def test_pretraining_data_resumes_exactly():
    a = ShapesPretrainData(seed=5)
    a.next_batch(8)
    state = a.state_dict()
    x1, c1 = a.next_batch(8, torch.Generator().manual_seed(2))
    b = ShapesPretrainData(seed=5)
    b.load_state_dict(state)
    x2, c2 = b.next_batch(8, torch.Generator().manual_seed(2))
    assert torch.equal(x1, x2) and c1 == c2
    with pytest.raises(ValueError, match="seed"):
        ShapesPretrainData(seed=6).load_state_dict(state)


def test_tokenizer_saves_and_loads_with_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    from rlsd.shapes.tokenizer import MODEL_MAX_LENGTH, build_tokenizer

    build_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok(["a red circle next to a green square", ""], padding="max_length", max_length=tok.model_max_length).input_ids
    assert tok.model_max_length == MODEL_MAX_LENGTH and len(tok) == 20
    assert ids[0][0] == tok.bos_token_id and ids[0][9] == tok.eos_token_id and ids[0][10:] == [tok.pad_token_id] * 2
    assert ids[1][:2] == [tok.bos_token_id, tok.eos_token_id]
    assert tok.unk_token_id not in ids[0] and tok("a purple circle").input_ids[2] == tok.unk_token_id
