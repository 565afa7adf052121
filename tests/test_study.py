"""The study protocol (disjoint tuning and test sets) and the study's metrics on rendered scenes of known content."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rlsd.shapes.render import render_batch
from rlsd.shapes.scene import Scene, SceneObject


def test_tuning_and_test_sets_are_disjoint_and_fixed() -> None:
    from rlsd.prompts.shapes import compositional_prompts
    from rlsd.protocol import MONITOR_PROMPTS, TEST_TRAIN_SEEDS, TUNING_TRAIN_SEEDS, HeldOut, eval_seeds, heldout_compositions

    tuning, test = heldout_compositions("tuning"), heldout_compositions("test")
    assert not set(tuning) & set(test) and sorted(tuning + test) == sorted(compositional_prompts("eval"))
    assert heldout_compositions("test") == test  # a fixed split, not a fresh shuffle
    assert not set(MONITOR_PROMPTS) & set(tuning + test)
    assert not set(TEST_TRAIN_SEEDS) & set(TUNING_TRAIN_SEEDS)
    prompts = HeldOut(["a circle", "a shape"], test[:2], [])
    seeds = {split: eval_seeds(split, HeldOut(prompts.diversity, (tuning if split == "tuning" else test)[:2], []), 16, 32)
             for split in ("tuning", "test")}
    used = {split: {s for v in m.values() for s in v} for split, m in seeds.items()}
    assert not used["tuning"] & used["test"]
    assert not set(seeds["test"]["a circle"]) & set(seeds["test"]["a shape"])  # colour-open prompts: own ranges
    with pytest.raises(ValueError, match="split must be one of"):
        heldout_compositions("train")


def test_demo_refuses_reporting_seeds_in_tuning_and_tuning_seeds_in_test() -> None:
    from rlsd.demo import _check_seeds

    _check_seeds("test", [0, 1, 2, 3, 4])
    _check_seeds("tuning", [100, 107])
    with pytest.raises(ValueError, match="--split tuning"):
        _check_seeds("test", [100])
    with pytest.raises(ValueError, match="--split tuning"):
        _check_seeds("tuning", [0])


def test_seed_list_parsing() -> None:
    from rlsd.protocol import train_seeds

    assert train_seeds("0-4") == [0, 1, 2, 3, 4] and train_seeds("100,102-103") == [100, 102, 103]
    for bad in ("", "a-b", "1,1"):
        with pytest.raises(ValueError, match="--seeds"):
            train_seeds(bad)


def _circle(colour: str, x: float = 0.5) -> SceneObject:
    return SceneObject("circle", colour, (x, 0.5), 0.15)


def test_exactly_the_named_objects_rejects_extras_and_wrong_colours() -> None:
    from rlsd.shapes.detector import detect_batch
    from rlsd.study import exact_objects

    prompt = "a red circle left of a blue square"
    right = Scene((_circle("red", 0.25), SceneObject("square", "blue", (0.75, 0.5), 0.15)), "left of")
    extra = Scene((*right.objects, _circle("green", 0.5)), "left of")
    wrong = Scene((_circle("yellow", 0.25), SceneObject("square", "blue", (0.75, 0.5), 0.15)), "left of")
    dets = detect_batch(torch.from_numpy(render_batch([right, extra, wrong])))
    assert [exact_objects(d, prompt) for d in dets] == [1.0, 0.0, 0.0]


def test_parity_over_drawn_objects_empty_share_and_top_colour_per_block() -> None:
    """8 seeds of "a circle": 6 red, 1 green, 1 empty canvas; SP counts the 7 drawn objects only."""
    from rlsd.rewards.parity import statistical_parity
    from rlsd.study import metric_values, sample_table
    from rlsd.evaluation import EvalResult

    scenes = [Scene((_circle(c),)) for c in ["red"] * 6 + ["green"]] + [Scene(())]
    table = pd.DataFrame({"prompt": ["a circle"] * 8, "seed": range(8)})
    samples = sample_table(EvalResult({}, table, torch.from_numpy(render_batch(scenes))))
    subsets = {"diversity": ["a circle"]}
    assert metric_values(samples, "sp_drawn", subsets, 8) == pytest.approx([statistical_parity([0] * 6 + [1], 4)])
    assert metric_values(samples, "empty", subsets, 8) == pytest.approx([1 / 8])
    assert metric_values(samples, "top_colour", subsets, 8) == pytest.approx([6 / 7])
    with pytest.raises(ValueError, match="blocks of 3"):
        metric_values(samples, "empty", subsets, 3)


def test_paired_rows_and_over_seeds_give_the_change_and_its_interval() -> None:
    from rlsd.study import mean_ci, over_seeds, paired_rows

    def table(gold: float) -> pd.DataFrame:
        return pd.DataFrame({"prompt": ["a red circle"] * 4, "seed": range(4), "shapes_gold": gold,
                             "shapes_preference": 0.0})

    subsets = {"all": ["a red circle"]}
    rows = [paired_rows(table(0.5), table(0.5 + g), subsets, 8, keys=("gold",)).assign(seed=s)
            for s, g in enumerate((0.1, 0.2, 0.3))]
    per_seed = pd.concat(rows)
    assert per_seed["change"].tolist() == pytest.approx([0.1, 0.2, 0.3]) and per_seed["improved"].all()
    summary = over_seeds(per_seed).iloc[0]
    mean, half = mean_ci([0.1, 0.2, 0.3])
    assert summary["change"] == pytest.approx(0.2) and summary["95% CI"] == pytest.approx(half)
    assert half == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)


def test_parity_presence_term_pays_for_drawing_and_is_validated() -> None:
    from rlsd.rewards import build_reward

    scenes = [Scene((_circle(c),)) for c in ["red"] * 3] + [Scene(())]
    images = torch.from_numpy(render_batch(scenes))
    meta = [{"group": 0}] * 4
    plain = build_reward({"name": "shapes_color_parity", "credit": "leave_one_out"})
    paid = build_reward({"name": "shapes_color_parity", "credit": "leave_one_out", "presence": 0.1})
    r0, _ = plain(images, ["a circle"] * 4, meta)
    r1, info = paid(images, ["a circle"] * 4, meta)
    assert r1 - r0 == pytest.approx(torch.tensor([0.1, 0.1, 0.1, 0.0]))
    assert info["object_present"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert r0[3] == pytest.approx(0.0)  # parity over drawn objects: an empty canvas changes nothing
    assert r1[3] < r1[0]  # with the presence term, drawing the majority colour beats drawing nothing
    with pytest.raises(ValueError, match="presence"):
        build_reward({"name": "shapes_color_parity", "presence": -1})
