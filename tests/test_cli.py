"""The training CLI: a real smoke run, 2-process == 1-process equivalence, and one-line errors on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlsd.rewards import Reward, register_reward
from rlsd.train import launch_command, main

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
TINY = [  # tiny pixel model, 3 DDIM steps, global batch 2 prompts x 2 images
    "model.path=tiny-pixel", "sample.num_steps=3", "sample.num_prompts_per_iter=2", "tasks.0.group_size=2",
    "train.timesteps_per_iter=2", "train.lr=1e-3", "train.clip_range=0.2", "log.progress=false"]


def test_cli_smoke_run_writes_all_outputs(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rlsd.train", "--config", "configs/tiny_sd_smoke.yaml",
                           f"log.run_dir={run}", "train.iterations=2", "eval.every=2", "eval.prompts=[a cat]",
                           "eval.seeds=[0]", "eval.rewards=[jpeg_compressibility]", "log.progress=false"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "iter_000002" / "COMPLETE").is_file()
    assert list((run / "images").glob("samples_train_*.png"))
    from rlsd.recording import read_metrics

    metrics = read_metrics(run)
    assert {"reward/jpeg/mean", "ppo/ratio_first_abs_dev", "eval/jpeg_compressibility/mean"} <= set(metrics.columns)
    assert (metrics["ppo/ratio_first_abs_dev"].dropna() < 1e-5).all()
    pipe = StableDiffusionPipeline.from_pretrained(run / "export", local_files_only=True, safety_checker=None)
    assert pipe.unet.config.sample_size == 8


def _equivalence_run(tmp_path: Path, name: str, processes: int, *extra: str) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{name}.pt"
    args = [*TINY, *extra, f"log.run_dir={tmp_path / name}", "train.iterations=2", "log.export=false",
            "tasks.0.reward=test_brightness", "train.adam_eps=1e-3",
            "log.image_every=0", "pretrain.enabled=true", "pretrain.batch_size=2"]
    script = str(REPO / "tests" / "dist_scripts" / "train_equivalence.py")
    if processes == 1:
        cmd = [sys.executable, script, str(out), *args]
        env = ENV
    else:
        cmd, env = launch_command("unused", (), num_processes=processes)
        cmd = cmd[:cmd.index("-m")] + [script, str(out), *args]
        env = dict(env, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


TWO_TASKS_CLIPPED = [  # per-task clip active at every step (task norms 1.2-5.7 at the tiny model, clip 1 and 0.5)
    'tasks=[{name: a, prompts: {name: list, prompts: ["a red car", "a forest"]}, reward: test_brightness, '
    'group_size: 2}, {name: b, prompts: {name: list, prompts: ["a photo of a cat", "a city at night"]}, '
    'reward: test_brightness, group_size: 2, weight: 0.5}]',
    "train.task_updates=summed", "train.clip_per_task=true", "train.max_grad_norm=1.0"]


@pytest.mark.parametrize("extra", [(), TWO_TASKS_CLIPPED], ids=["one_task", "clip_per_task"])
def test_two_processes_match_one_process(tmp_path: Path, extra: tuple[str, ...]) -> None:
    """Same global batch on 1 and 2 gloo ranks: samples are identical (per-slot generators), advantages use
    the gathered batch, and DDP averages the two half-batch gradients; only the float summation order of the
    gradient all-reduce (and of batched kernels) differs, ~1e-7 relative. Adam's first steps are ~lr*sign(g)
    per element, which turns that noise into O(lr) jumps for elements whose gradient is ~0, so the run uses
    adam_eps=1e-3 (Adam ~ SGD for tiny gradients) and a smooth reward. Measured: ||w2 - w1|| / ||w1 - w0||
    = 3e-6 after one step and 1e-5 after 2 iterations (4 PPO + 2 L_pre steps); we allow 1e-4. With
    ``clip_per_task`` each task's gradient must be all-reduced before its own clip, not after the sum."""
    from rlsd.models import build_tiny_pixel_model

    one = _equivalence_run(tmp_path, "one", 1, *extra)
    two = _equivalence_run(tmp_path, "two", 2, *extra)
    init = build_tiny_pixel_model(seed=0).unet.state_dict()
    flat = {name: torch.cat([d[k].flatten().double() for k in sorted(one)]) for name, d in
            (("one", one), ("two", two), ("init", init))}
    update = float((flat["one"] - flat["init"]).norm())
    diff = float((flat["two"] - flat["one"]).norm())
    assert update > 1e-2, update  # training really changed the weights
    assert diff <= 1e-4 * update, f"2-process run differs by {diff:.3g} (update norm {update:.3g})"


class _NanReward(Reward):
    name = "test_cli_nan"

    def score(self, images, prompts, metadata):
        return torch.full((images.shape[0],), float("nan")), {}


register_reward("test_cli_nan")(_NanReward)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("overrides, words", [
    (["sample.eta=0"], ["sample.eta", "> 0"]),
    (["model.path=/nonexistent/model"], ["/nonexistent/model", "does not exist", "model.path"]),
    (["tasks.0.reward=test_cli_nan"], ["test_cli_nan", "task 'jpeg'", "NaN"]),
    (["train.lrr=1"], ["train.lrr", "train.lr"]),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, capsys, overrides: list[str], words) -> None:
    code = main(["--config", "configs/tiny_sd_smoke.yaml", *TINY, f"log.run_dir={tmp_path}", *overrides])
    line = _error_line(capsys)
    assert code == 2 and all(w in line for w in words), line


def test_batch_not_divisible_by_world_size_two_processes(tmp_path: Path) -> None:
    cmd, env = launch_command("configs/tiny_sd_smoke.yaml", [*TINY, "sample.num_prompts_per_iter=3",
                                                            f"log.run_dir={tmp_path}"], num_processes=2)
    proc = subprocess.run(cmd, cwd=REPO, env=dict(env, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors and "sample.num_prompts_per_iter=3 is not divisible by the world size 2" in errors[0], proc.stderr[-2000:]
    # the ranks exit with one line each; only accelerate's own launcher adds a CalledProcessError traceback
    assert "rlsd/trainer.py" not in proc.stderr and "rlsd/config.py" not in proc.stderr
