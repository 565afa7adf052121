"""Prompt sources: registry, resumable order, file sources, compositional grammar round trip."""

from __future__ import annotations

import pandas as pd
import pytest

from rlsd.prompts import PromptSource, available_prompt_sources, build_prompt_source
from rlsd.prompts.compositional import RELATIONS, load_objects, make_prompt, parse_prompt, split_objects


def test_list_source_covers_each_epoch_and_reshuffles():
    prompts = [f"p{i}" for i in range(7)]
    source = build_prompt_source({"name": "list", "prompts": prompts, "seed": 3})
    first, second = source.next_batch(7), source.next_batch(7)
    assert sorted(first) == sorted(prompts) == sorted(second)
    assert first != second  # a new permutation per epoch
    assert source.state_dict()["epoch"] == 1


def test_resume_equals_uninterrupted():
    spec = {"name": "list", "prompts": [f"p{i}" for i in range(5)], "seed": 1}
    straight = build_prompt_source(spec)
    expected = straight.next_batch(3) + straight.next_batch(6) + straight.next_batch(4)
    part = build_prompt_source(spec)
    got = part.next_batch(3) + part.next_batch(6)
    resumed = build_prompt_source(spec)
    resumed.load_state_dict(part.state_dict())
    assert got + resumed.next_batch(4) == expected


def test_state_from_other_pool_is_rejected():
    source = build_prompt_source({"name": "list", "prompts": ["a", "b"]})
    other = build_prompt_source({"name": "list", "prompts": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="num_prompts"):
        source.load_state_dict(other.state_dict())


def test_unknown_and_bad_specs():
    with pytest.raises(ValueError, match="available: .*diffusiondb"):
        build_prompt_source({"name": "nope"})
    with pytest.raises(ValueError, match="'name' key"):
        build_prompt_source({"prompts": ["x"]})
    assert {"list", "diffusiondb", "partiprompts", "occupations", "compositional"} <= set(available_prompt_sources())


def test_diffusiondb_unique_split_and_missing_file(tmp_path):
    prompts = [f"prompt {i % 12}" for i in range(30)] + [None, "  "]
    path = tmp_path / "metadata.parquet"
    pd.DataFrame({"prompt": prompts, "seed": range(len(prompts))}).to_parquet(path)
    train = build_prompt_source({"name": "diffusiondb", "path": str(path), "num_eval": 4})
    held = build_prompt_source({"name": "diffusiondb", "path": str(path), "split": "eval", "num_eval": 4})
    assert sorted(held.prompts) == [f"prompt {i}" for i in (10, 11, 8, 9)] and len(train) == 8
    assert not set(train.prompts) & set(held.prompts)
    with pytest.raises(FileNotFoundError, match="missing.parquet.*poloclub/diffusiondb"):
        build_prompt_source({"name": "diffusiondb", "path": str(tmp_path / "missing.parquet")})


def test_partiprompts_tsv(tmp_path):
    path = tmp_path / "PartiPrompts.tsv"
    pd.DataFrame({"Prompt": ["a red cube", "a blue ball", "a dog"], "Category": ["A", "A", "B"]}).to_csv(path, sep="\t", index=False)
    assert sorted(build_prompt_source({"name": "partiprompts", "path": str(path)}).prompts) == ["a blue ball", "a dog", "a red cube"]
    assert build_prompt_source({"name": "partiprompts", "path": str(path), "category": "B"}).prompts == ["a dog"]
    with pytest.raises(FileNotFoundError, match="google-research/parti"):
        build_prompt_source({"name": "partiprompts", "path": str(tmp_path / "x.tsv")})


def test_occupations():
    source = build_prompt_source({"name": "occupations", "shuffle": False})
    assert len(source) == 100
    assert source.prompts[0] == "a portrait of an accountant" and "a portrait of a nurse" in source.prompts


def test_object_vocabulary_and_class_split():
    objects = load_objects()
    assert len(objects) == 532 and "person" in objects and "hot dog" in objects
    train, held = split_objects()
    assert (len(train), len(held)) == (450, 82) and not set(train) & set(held)
    assert split_objects() == (train, held) and split_objects(seed=1) != (train, held)


@pytest.mark.parametrize("first, second", [("apple", "dog"), ("hot dog", "ice cream"), ("traffic light", "umbrella")])
@pytest.mark.parametrize("relation", RELATIONS)
def test_prompt_round_trip(first, relation, second):
    prompt = make_prompt(first, relation, second)
    assert parse_prompt(prompt) == (first, relation, second)
    assert parse_prompt(prompt.capitalize() + ".") == (first, relation, second)


def test_parser_articles_and_errors():
    assert make_prompt("apple", "near", "egg") == "an apple near an egg"
    assert parse_prompt("a cup and saucer near a dog", ("cup and saucer", "dog")) == ("cup and saucer", "near", "dog")
    with pytest.raises(ValueError, match="not of the form"):
        parse_prompt("a photo of a cat")


def test_compositional_source_split_and_resume():
    train = build_prompt_source({"name": "compositional", "seed": 5})
    held = build_prompt_source({"name": "compositional", "split": "eval"})
    train_objects, held_objects = split_objects()
    for prompt in train.next_batch(20):
        first, _, second = parse_prompt(prompt)
        assert first in train_objects and second in train_objects and first != second
    for prompt in held.next_batch(20):
        assert {parse_prompt(prompt)[0], parse_prompt(prompt)[2]} <= set(held_objects)
    state = train.state_dict()
    expected = train.next_batch(4)
    resumed = build_prompt_source({"name": "compositional", "seed": 5})
    resumed.load_state_dict(state)
    assert resumed.next_batch(4) == expected
    assert isinstance(resumed, PromptSource)
