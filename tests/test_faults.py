"""Faults: a used run dir, non-finite numbers, SIGTERM/SIGINT; each ends with one line and a documented exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from rlsd.train import main

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", "configs/tiny_sd_smoke.yaml", "model.path=tiny-pixel", "sample.num_steps=3",
        "sample.num_prompts_per_iter=2", "tasks.0.group_size=2", "train.timesteps_per_iter=1",
        "log.progress=false", "log.export=false", "log.image_every=0"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_fresh_run_in_used_run_dir_is_refused_before_the_model_loads(tmp_path: Path, capsys, monkeypatch) -> None:
    import rlsd.trainer

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step\n")
    monkeypatch.setattr(rlsd.trainer, "load_policy", lambda *a, **k: pytest.fail("model loaded"))
    code = main([*TINY, f"log.run_dir={run}"])
    line = _error_line(capsys)
    assert code == 2 and str(run) in line and "--resume auto" in line and "log.run_dir" in line, line
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]  # nothing written


def test_resume_auto_and_empty_run_dir_are_accepted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()  # an empty folder is fine
    assert main([*TINY, f"log.run_dir={run}", "train.iterations=1"]) == 0
    assert main([*TINY, f"log.run_dir={run}", "train.iterations=2", "--resume", "auto"]) == 0
    assert (run / "checkpoints" / "iter_000002" / "COMPLETE").is_file()
