"""Config: YAML presets load and validate, overrides coerce types, bad values name the field and the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rlsd.config import RLConfig, apply_override, config_from_dict, load_config

CONFIGS = sorted(p for p in Path("configs").glob("*.yaml") if p.name != "shapes_base.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_presets_load_and_roundtrip(path: Path) -> None:
    cfg = load_config(path)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_paper_preset_matches_the_paper() -> None:
    cfg = load_config("configs/sd2_paper.yaml")
    assert (cfg.sample.num_steps, cfg.sample.eta, cfg.sample.guidance_scale) == (50, 1.0, 7.0)
    assert (cfg.train.lr, cfg.train.clip_range, cfg.train.timesteps_per_iter) == (2e-6, 1e-4, 5)
    assert cfg.train.advantage_mode == "global_batch" and cfg.train.adv_clip == 10
    assert cfg.pretrain.enabled
    # 2048 samples per iteration = 16 per GPU x 128 GPUs (per-rank size derived, not stored)
    total = cfg.sample.num_prompts_per_iter * sum(t.group_size for t in cfg.tasks)
    assert cfg.sample.prompts_per_rank(128) * 128 == cfg.sample.num_prompts_per_iter
    assert total >= 2048


@pytest.mark.parametrize("task", ["preference", "compositional", "diversity"])
def test_single_task_shapes_configs_are_the_joint_config_restricted_to_one_task(task: str) -> None:
    """configs/shapes_<task>.yaml promise "the same settings" as the joint demo, for single- vs joint comparisons."""
    joint, single = load_config("configs/shapes_joint.yaml"), load_config(f"configs/shapes_{task}.yaml")
    for section in ("model", "sample", "train", "pretrain"):
        assert getattr(single, section) == getattr(joint, section), section
    (joint_task,) = [t for t in joint.tasks if t.name == task]
    (single_task,) = single.tasks
    assert dataclasses.replace(single_task, weight=joint_task.weight) == joint_task  # one task: the weight is moot


def test_overrides_coerce_to_field_types() -> None:
    cfg = load_config(None, ["train.lr=1e-5", "tasks.0.group_size=8", "model.use_lora=true",
                             "eval.prompts=[a cat, a dog]", "tasks.0.reward={name: jpeg_compressibility}",
                             "model.path=123"])
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.tasks[0].group_size == 8 and cfg.model.use_lora is True
    assert cfg.eval.prompts == ["a cat", "a dog"]
    assert cfg.tasks[0].reward == {"name": "jpeg_compressibility"}
    assert cfg.model.path == "123"  # str fields keep the raw text


@pytest.mark.parametrize("override, words", [
    ("sample.eta=0", ["sample.eta", "> 0"]),
    ("train.timesteps_per_iter=60", ["train.timesteps_per_iter", "sample.num_steps=50"]),
    ("train.clip_range=0", ["train.clip_range", "> 0"]),
    ("train.advantage_mode=batch", ["train.advantage_mode", "global_batch"]),
    ("train.lr=fast", ["train.lr", "float"]),
    ("tasks.0.group_size=1.5", ["tasks.0.group_size", "int"]),
    ("model.use_lora=maybe", ["model.use_lora", "true or false"]),
])
def test_invalid_value_names_field_and_fix(override: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        load_config(None, [override])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_unknown_key_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown config key train\.lrr; did you mean train\.lr"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ValueError, match="index 3 is out of range"):
        load_config(None, ["tasks.3.name=x"])


def test_unknown_yaml_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sample": {"num_step": 4}}))
    with pytest.raises(ValueError, match=r"sample\.num_step; did you mean sample\.num_steps"):
        load_config(path)


def test_batch_divisibility_names_field() -> None:
    cfg = load_config(None, ["sample.num_prompts_per_iter=6"])
    assert cfg.sample.prompts_per_rank(2) == 3 and cfg.sample.prompts_per_rank(3) == 2
    with pytest.raises(ValueError, match=r"sample\.num_prompts_per_iter=6 is not divisible by the world size 4"):
        cfg.validate(world_size=4)


def test_apply_override_in_place_and_save(tmp_path: Path) -> None:
    cfg = RLConfig()
    apply_override(cfg, "log.run_dir=/tmp/x")
    cfg.save(tmp_path / "c.yaml")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["log"]["run_dir"] == "/tmp/x"
    with pytest.raises(ValueError, match="key=value"):
        apply_override(cfg, "train.lr")
