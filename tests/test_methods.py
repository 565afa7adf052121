"""Baseline methods (rlsd.methods): their losses on known values, the DRaFT reparameterisation, the refusals,
and a 2-iteration CLI run of each method."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rlsd.methods.common import reward_loss, weighted_denoising_loss
from rlsd.methods.draft import last_k_steps, reparameterized
from rlsd.methods.raft import raft_weights
from rlsd.methods.refl import predicted_x0, refl_step_index
from rlsd.methods.rwr import rwr_weights
from rlsd.recording import read_metrics
from rlsd.train import main

TINY_SD = ["--config", "configs/tiny_sd_smoke.yaml", "log.progress=false", "log.export=false", "log.image_every=0"]
SHAPES = [*TINY_SD, "model.path=data/shapesworld_base", "sample.num_steps=3", "sample.num_prompts_per_iter=2",
          "sample.guidance_scale=2.0", "tasks.0.reward=shapes_preference", "tasks.0.group_size=1",
          "tasks.0.prompts={name: list, prompts: [a red circle, a blue square]}"]


def test_raft_keeps_the_top_fraction() -> None:
    w = raft_weights(torch.tensor([0.1, 0.9, 0.5, 0.7]), 0.5)
    assert torch.equal(w, torch.tensor([0.0, 0.5, 0.0, 0.5]))
    w24 = raft_weights(torch.arange(24.0), 1 / 24)  # the paper's 1/24 keeps exactly one of 24
    assert w24[-1] == 1 and w24[:-1].sum() == 0
    with pytest.raises(ValueError, match="baseline.raft_accept_fraction"):
        raft_weights(torch.arange(23.0), 1 / 24)


def test_rwr_weights() -> None:
    w = rwr_weights(torch.tensor([0.0, 0.5 * math.log(3.0)]), beta=0.5)  # exp(r / beta) = 1, 3
    assert torch.allclose(w, torch.tensor([0.25, 0.75]))
    assert torch.allclose(rwr_weights(torch.tensor([1.0, 2.0, 3.0]), weighting="normalized"),
                          torch.tensor([0.0, 1 / 3, 2 / 3]))
    assert torch.allclose(rwr_weights(torch.ones(4), weighting="normalized"), torch.full((4,), 0.25))


def test_weighted_denoising_and_reward_losses() -> None:
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.stack([torch.ones(3, 2, 2), 2 * torch.ones(3, 2, 2)])
    assert float(weighted_denoising_loss(pred, target, torch.tensor([0.25, 0.75]))) == pytest.approx(3.25)
    assert float(reward_loss(torch.tensor([1.0, 2.0, 3.0]))) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="one weight per sample"):
        weighted_denoising_loss(pred, target, torch.ones(3))


def test_refl_x0_matches_diffusers_and_step_is_late() -> None:
    from diffusers import DDIMScheduler

    for kind in ("epsilon", "v_prediction"):
        scheduler = DDIMScheduler(prediction_type=kind, clip_sample=False)
        scheduler.set_timesteps(10)
        sample, output = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
        t = int(scheduler.timesteps[7])
        expected = scheduler.step(output, t, sample, eta=0.0).pred_original_sample
        assert torch.allclose(predicted_x0(scheduler, output, sample, t), expected, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    assert {refl_step_index(40, 10, gen) for _ in range(200)} == set(range(30, 40))


def test_draft_reparameterisation_reproduces_the_trajectory() -> None:
    """Re-run with grad over the last K steps, DRaFT's chain equals the recorded sample, and the gradient of the
    reparameterised step is the gradient of its mean."""
    from rlsd.models import build_tiny_pixel_model
    from rlsd.sampling import sample_trajectories

    mean = torch.tensor([1.0, 2.0], requires_grad=True)
    x = reparameterized(mean * 3, torch.tensor([5.0, 7.0]))
    x.sum().backward()
    assert torch.equal(x.detach(), torch.tensor([5.0, 7.0])) and torch.equal(mean.grad, torch.tensor([3.0, 3.0]))
    model = build_tiny_pixel_model(seed=0)
    traj = sample_trajectories(model, ["a cat", "a dog"], num_steps=4, guidance_scale=2.0, eta=1.0,
                               generator=torch.Generator().manual_seed(0))
    x0 = last_k_steps(model, traj, torch.arange(2), 3, guidance_scale=2.0, eta=1.0)
    assert torch.allclose(x0.detach(), traj.latents[:, -1], atol=1e-5)
    x0.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())


def test_preference_gradient_path_matches_the_reward() -> None:
    from rlsd.methods.differentiable import check_matches, differentiable_reward
    from rlsd.rewards import build_reward

    reward = build_reward("shapes_preference")
    scorer = differentiable_reward(reward, "tasks.0.reward", "refl")
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    prompts = ["a red circle", "a shape", "a blue square left of a red circle"]
    assert check_matches(scorer, reward, images.detach(), prompts) < 1e-5
    scorer(images, prompts).sum().backward()
    assert images.grad.abs().sum() > 0


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("overrides, words", [
    (["train.method=refl"], ["tasks.0.reward='jpeg_compressibility'", "differentiable", "shapes_preference"]),
    (["train.method=draft"], ["tasks.0.reward", "differentiable"]),
    (["train.method=raft"], ["baseline.raft_accept_fraction", "keeps no image of the 8 samples", ">= 24"]),
    (["train.method=ddpo"], ["train.advantage_mode", "per_prompt"]),
    (["train.method=sft"], ["train.method", "raft"]),
    (["train.method=draft", "baseline.draft_lv=2", "baseline.draft_k=2"], ["baseline.draft_k", "draft_lv"]),
    (["train.method=rwr", "baseline.rwr_beta=0"], ["baseline.rwr_beta", "> 0"]),
])
def test_methods_refuse_bad_settings(tmp_path: Path, capsys, overrides: list[str], words: list[str]) -> None:
    code = main([*TINY_SD, f"log.run_dir={tmp_path}", *overrides])
    line = _error(capsys)
    assert code == 2 and all(w in line for w in words), line


@pytest.mark.parametrize("args", [
    [*TINY_SD, "train.method=raft", "baseline.raft_accept_fraction=0.25"],
    [*TINY_SD, "train.method=rwr"],
    [*TINY_SD, "train.method=ddpo", "train.advantage_mode=per_prompt"],
    [*SHAPES, "train.method=refl"],
    [*SHAPES, "train.method=draft", "baseline.draft_k=2"],
    [*SHAPES, "train.method=draft", "baseline.draft_lv=2"],
], ids=["raft", "rwr", "ddpo", "refl", "draft_k", "draft_lv"])
def test_two_iteration_cli_run(tmp_path: Path, args: list[str]) -> None:
    method = next(a.split("=")[1] for a in args if a.startswith("train.method="))
    assert main([*args, f"log.run_dir={tmp_path}", "train.iterations=2"]) == 0
    metrics = read_metrics(tmp_path)
    loss = "loss/ppo" if method == "ddpo" else f"loss/{method}"
    assert len(metrics) == 2 and metrics[loss].notna().all()
    assert metrics[[c for c in metrics.columns if c.startswith("reward/")][0]].notna().all()
    assert (tmp_path / "checkpoints" / "iter_000002" / "COMPLETE").is_file()
    if method == "draft" and "baseline.draft_k=2" in args:  # the chain re-run with grad is the sampled trajectory
        assert torch.allclose(torch.tensor(metrics[f"loss/{method}"].to_numpy()),
                              -torch.tensor(metrics["reward/jpeg/mean"].to_numpy()), atol=1e-4)


@pytest.mark.parametrize("method", ["raft", "rwr", "refl", "draft", "ddpo"])
def test_presets_load_with_their_method(method: str) -> None:
    from rlsd.config import load_config

    table6 = {"raft": (3e-6, 32), "rwr": (1e-5, 16), "refl": (1e-5, 12), "draft": (5e-5, 3), "ddpo": (3e-4, 256)}
    for path in (f"configs/shapes_{method}.yaml", f"configs/sd2_{method}.yaml"):
        cfg = load_config(path)
        assert cfg.train.method == method, path
    sd2 = load_config(f"configs/sd2_{method}.yaml")
    assert (sd2.train.lr, sd2.sample.num_prompts_per_iter) == table6[method]
    if method == "draft":
        assert sd2.model.use_lora and sd2.model.lora_rank == 32
    if method == "rwr":
        assert sd2.baseline.rwr_beta == 0.5


@pytest.mark.parametrize("method", ["raft", "refl"])
def test_resume_equals_uninterrupted(tmp_path: Path, method: str) -> None:
    """A baseline's state is the trainer's (weights, optimizer, prompt stream) plus (seed, iteration): resuming
    after iteration 1 gives the uninterrupted run's iteration 2."""
    args = ([*TINY_SD, "train.method=raft", "baseline.raft_accept_fraction=0.25"] if method == "raft"
            else [*SHAPES, "train.method=refl"])
    assert main([*args, f"log.run_dir={tmp_path / 'full'}", "train.iterations=2"]) == 0
    assert main([*args, f"log.run_dir={tmp_path / 'cut'}", "train.iterations=1"]) == 0
    assert main([*args, f"log.run_dir={tmp_path / 'cut'}", "train.iterations=2", "--resume", "auto"]) == 0
    full, cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    for key in (f"loss/{method}", [c for c in full.columns if c.startswith("reward/") and c.endswith("/mean")][0]):
        assert full.loc[2, key] == pytest.approx(cut.loc[2, key], rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("method", ["raft", "rwr"])
def test_two_processes_match_one_process(tmp_path: Path, method: str) -> None:
    """The baselines' global-batch weights, noise and timesteps do not depend on the world size: 2 gloo ranks give
    the 1-process weights (RAFT keeps 1 of 4 samples, so one rank trains a zero-weight row). Tolerance and settings
    as in tests/test_cli.py's PPO equivalence test."""
    from test_cli import _equivalence_run

    from rlsd.models import build_tiny_pixel_model

    extra = (f"train.method={method}", "baseline.raft_accept_fraction=0.25", "train.inner_epochs=2")
    one = _equivalence_run(tmp_path, "one", 1, *extra)
    two = _equivalence_run(tmp_path, "two", 2, *extra)
    init = build_tiny_pixel_model(seed=0).unet.state_dict()
    flat = {name: torch.cat([d[k].flatten().double() for k in sorted(one)]) for name, d in
            (("one", one), ("two", two), ("init", init))}
    update = float((flat["one"] - flat["init"]).norm())
    diff = float((flat["two"] - flat["one"]).norm())
    assert update > 1e-2, update
    assert diff <= 1e-4 * update, f"2-process run differs by {diff:.3g} (update norm {update:.3g})"


def test_real_path_rewards_have_gradients(tmp_path: Path) -> None:
    """ImageReward, PickScore and aesthetic (tiny random checkpoints in the official layouts): the differentiable
    path gives the reward's own values and a gradient on the images."""
    from rlsd.methods.differentiable import check_matches, differentiable_reward
    from rlsd.rewards.clip_rewards import AestheticReward, PickScoreReward
    from rlsd.rewards.imagereward import ImageRewardReward
    from rlsd.rewards.imagereward_tiny import build_tiny_imagereward_folder
    from rlsd.rewards.tiny import build_tiny_aesthetic_head, build_tiny_clip_folder

    clip = build_tiny_clip_folder(tmp_path / "clip", seed=0)
    rewards = [ImageRewardReward(build_tiny_imagereward_folder(tmp_path / "ir", seed=0)), PickScoreReward(clip),
               AestheticReward(clip, build_tiny_aesthetic_head(tmp_path / "head.pth", input_dim=16))]
    prompts = ["a cat", "a red car"]
    for reward in rewards:
        scorer = differentiable_reward(reward, "tasks.0.reward", "draft")
        images = torch.rand(2, 3, 16, 16, requires_grad=True)
        assert check_matches(scorer, reward, images.detach(), prompts) < 1e-4, reward.name
        scorer(images, prompts).sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0, reward.name
