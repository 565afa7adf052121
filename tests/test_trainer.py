"""RLTrainer on a tiny pixel-space model: ratio == 1 before any update, bit-identical resume, LoRA, NaN rewards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlsd.config import load_config
from rlsd.rewards import Reward, register_reward
from rlsd.trainer import RLTrainer
from rlsd.trainer_setup import trainable_state_dict

torch.set_num_threads(1)  # tiny shapes: one thread is fastest on a shared 2-core machine


def tiny_config(run_dir: Path, *extra: str):
    """Tiny pixel model, 3 DDIM steps, 2 prompts x 2 images, 2 timesteps per iteration, L_pre on ShapesWorld."""
    return load_config("configs/tiny_sd_smoke.yaml", [
        "model.path=tiny-pixel", "sample.num_steps=3", "sample.num_prompts_per_iter=2", "tasks.0.group_size=2",
        "train.timesteps_per_iter=2", "train.lr=1e-3", "train.clip_range=0.2", "train.iterations=4",
        "pretrain.enabled=true", "pretrain.batch_size=2", "pretrain.dataset={name: shapesworld}",
        f"log.run_dir={run_dir}", "log.image_every=0", "log.export=false", "log.progress=false",
        "log.checkpoint_every=2", *extra])


def unet_params(trainer: RLTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.unet.state_dict().items()}


def test_first_rescore_ratio_is_one_and_weights_move(tmp_path: Path) -> None:
    trainer = RLTrainer(tiny_config(tmp_path))
    before = unet_params(trainer)
    metrics = trainer.step(0)
    assert metrics["ppo/ratio_first_abs_dev"] < 1e-5
    assert metrics["ppo/grad_norm"] > 0 and metrics["loss/pretrain"] > 0
    after = unet_params(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert {"reward/jpeg/mean", "ppo/approx_kl", "ppo/clipfrac", "lr", "loss/ppo", "time/sample_s", "time/reward_s", "perf/samples_per_s"} <= set(metrics)


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = RLTrainer(tiny_config(tmp_path / "a"))
    straight.train()
    first = RLTrainer(tiny_config(tmp_path / "b", "train.iterations=2"))
    first.train()
    del first  # "killed" after iteration 2; a fresh process-like trainer resumes from the checkpoint
    resumed = RLTrainer(tiny_config(tmp_path / "b"))
    resumed.train(resume="auto")
    assert resumed.iteration == straight.iteration == 4
    a, b = unet_params(straight), unet_params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert opt_a.keys() == opt_b.keys()
    for i in opt_a:
        assert all(torch.equal(torch.as_tensor(opt_a[i][k]), torch.as_tensor(opt_b[i][k])) for k in opt_a[i])
    assert straight.prompt_sources[0].state_dict() == resumed.prompt_sources[0].state_dict()
    assert straight.pretrain.state_dict()["batch_index"] == resumed.pretrain.state_dict()["batch_index"]


def test_lora_trains_only_adapters(tmp_path: Path) -> None:
    trainer = RLTrainer(tiny_config(tmp_path, "model.use_lora=true", "model.lora_rank=2", "pretrain.enabled=false"))
    trained = trainable_state_dict(trainer.model.unet)
    assert trained and all("lora" in k for k in trained)
    before = unet_params(trainer)
    trainer.step(0)
    after = unet_params(trainer)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("lora" in k for k in changed)


@register_reward("test_nan_reward")
def _nan_reward() -> Reward:
    class NanReward(Reward):
        name = "test_nan_reward"

        def score(self, images, prompts, metadata):
            out = torch.zeros(images.shape[0])
            out[0] = float("nan")
            return out, {}

    return NanReward()


def test_nan_reward_names_reward_and_task(tmp_path: Path) -> None:
    trainer = RLTrainer(tiny_config(tmp_path, "tasks.0.reward=test_nan_reward"))
    with pytest.raises(ValueError, match=r"reward 'test_nan_reward' of task 'jpeg' returned NaN/inf for 1 of 4"):
        trainer.step(0)


def test_group_of_a_prompt_stays_together(tmp_path: Path) -> None:
    trainer = RLTrainer(tiny_config(tmp_path, "sample.num_prompts_per_iter=2", "tasks.0.group_size=3"))
    batch = trainer.collect(0, iteration=0)
    prompts = batch.trajectory.prompts
    assert len(prompts) == 6 and prompts[:3] == [prompts[0]] * 3 and prompts[3:] == [prompts[3]] * 3
    assert batch.advantages.shape == (6,) and batch.rewards.shape == (6,)


def test_lora_export_merges_adapters(tmp_path: Path) -> None:
    from rlsd.models import load_model
    from rlsd.trainer_setup import export_policy

    trainer = RLTrainer(tiny_config(tmp_path, "model.use_lora=true", "model.lora_rank=2", "pretrain.enabled=false"))
    trainer.step(0)
    export_policy(trainer.model, tmp_path / "export")
    merged = load_model(tmp_path / "export")
    assert not any("lora" in k for k in merged.unet.state_dict())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 500])
    emb = trainer.model.encode_prompts(["a", "b"])
    with torch.no_grad():
        out = merged.unet(x, t, encoder_hidden_states=emb).sample
        torch.testing.assert_close(out, trainer.model.unet(x, t, encoder_hidden_states=emb).sample, rtol=1e-4, atol=1e-6)
        trainer.model.unet.disable_adapters()
        base = trainer.model.unet(x, t, encoder_hidden_states=emb).sample
    assert (out - base).abs().max() > 1e-4  # the trained adapters are really in the export


TWO_TASKS = ('tasks=[{name: jpeg, prompts: {name: list, prompts: ["a red car", "a forest"]}, '
             'reward: jpeg_compressibility, group_size: 2}, {name: jpeg_b, prompts: {name: list, prompts: '
             '["a photo of a cat", "a city at night"]}, reward: jpeg_compressibility, group_size: 2, weight: 0.5}]')


def adam_steps(trainer: RLTrainer) -> int:
    return int(max(float(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()))


@pytest.mark.parametrize("mode, steps", [("per_task", 4), ("summed", 2)])
def test_joint_update_modes_step_count_and_on_policy_start(tmp_path: Path, mode: str, steps: int) -> None:
    trainer = RLTrainer(tiny_config(tmp_path, TWO_TASKS, "pretrain.enabled=false", f"train.task_updates={mode}"))
    metrics = trainer.step(0)
    assert adam_steps(trainer) == steps  # per_task: 2 timesteps per task; summed: 2 timesteps in all
    assert {"reward/jpeg/mean", "reward/jpeg_b/mean"} <= set(metrics)
    assert metrics["ppo/ratio_first_abs_dev"] < 1e-5  # per_task: also the second task, sampled after an update


def test_per_task_samples_the_second_task_with_the_updated_policy(tmp_path: Path) -> None:
    per_task = RLTrainer(tiny_config(tmp_path / "a", TWO_TASKS, "pretrain.enabled=false"))
    summed = RLTrainer(tiny_config(tmp_path / "b", TWO_TASKS, "pretrain.enabled=false", "train.task_updates=summed"))
    first = per_task.collect(0, 0)
    torch.testing.assert_close(first.trajectory.images, summed.collect(0, 0).trajectory.images)
    second_before = per_task.collect(1, 0).trajectory.images
    per_task.policy_updates([first], [0], 0)
    second_after = per_task.collect(1, 0).trajectory.images
    assert (second_after - second_before).abs().max() > 1e-4  # same noise, moved policy


def test_task_update_modes_agree_for_one_task(tmp_path: Path) -> None:
    a = RLTrainer(tiny_config(tmp_path / "a", "pretrain.enabled=false"))
    b = RLTrainer(tiny_config(tmp_path / "b", "pretrain.enabled=false", "train.task_updates=summed"))
    a.step(0), b.step(0)
    pa, pb = unet_params(a), unet_params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_unknown_task_update_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train.task_updates"):
        tiny_config(tmp_path, "train.task_updates=alternating").validate()


def _step_gradient(trainer: RLTrainer, batches, j: int, tasks: list[int]) -> tuple[list[torch.Tensor], dict]:
    """The gradient ``policy_step`` hands the optimizer (the step itself is skipped)."""
    captured = []
    trainer._optimizer_step = lambda *step_args: captured.append([p.grad.clone() for p in trainer.params]) or 0.0
    stats = trainer.policy_step(batches, j, tasks)
    trainer.optimizer.zero_grad(set_to_none=True)
    del trainer._optimizer_step
    return captured[0], stats


def test_clip_per_task_gives_each_task_its_weight_share_of_the_step(tmp_path: Path) -> None:
    c = 1e-9  # far below either task's norm: both are clipped
    trainer = RLTrainer(tiny_config(tmp_path, TWO_TASKS, "pretrain.enabled=false", "train.task_updates=summed",
                                    "train.clip_per_task=true", f"train.max_grad_norm={c}"))
    batches = [trainer.collect(0, 0), trainer.collect(1, 0)]
    alone = [_step_gradient(trainer, [b], 1, [i])[0] for i, b in enumerate(batches)]  # one task: no per-task clip
    joint, stats = _step_gradient(trainer, batches, 1, [0, 1])
    weights = [t.weight for t in trainer.cfg.tasks]
    norms = [torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) for grads in alone]
    for name, norm in zip(["jpeg", "jpeg_b"], norms):
        assert stats[f"grad_norm/{name}"] == pytest.approx(float(norm), rel=1e-4)
    expected = [sum(w * c / n * g[k] for w, n, g in zip(weights, norms, alone)) for k in range(len(joint))]
    for got, want in zip(joint, expected):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=c * 1e-4)


def test_clip_per_task_without_an_active_clip_is_the_plain_sum(tmp_path: Path) -> None:
    runs = [RLTrainer(tiny_config(tmp_path / mode, TWO_TASKS, "pretrain.enabled=false", "train.task_updates=summed",
                                  f"train.clip_per_task={mode == 'per_task_clip'}", "train.max_grad_norm=1e6"))
            for mode in ("plain", "per_task_clip")]
    for trainer in runs:
        trainer.step(0)
    pa, pb = unet_params(runs[0]), unet_params(runs[1])
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k])


@pytest.mark.parametrize("override, words", [("train.max_grad_norm=0", "max_grad_norm > 0"),
                                             ("train.mixed_precision=fp16", "fp16")])
def test_clip_per_task_needs_a_clip_and_no_loss_scaler(tmp_path: Path, override: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"train.clip_per_task.*{words}"):
        tiny_config(tmp_path, "train.clip_per_task=true", override).validate()


def test_clip_per_task_refuses_sharded_backends(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    fsdp = SimpleNamespace(process_index=0, num_processes=1, distributed_type=DistributedType.FSDP)
    with pytest.raises(ValueError, match="clip_per_task.*FSDP"):
        RLTrainer(tiny_config(tmp_path, TWO_TASKS, "train.task_updates=summed", "train.clip_per_task=true"), fsdp)


def test_a_task_can_override_the_advantage_mode(tmp_path: Path) -> None:
    from rlsd.objective import normalize_advantages

    trainer = RLTrainer(tiny_config(tmp_path, TWO_TASKS, "tasks.1.advantage_mode=group_center"))
    assert [trainer.cfg.task_advantage_mode(i) for i in (0, 1)] == ["global_batch", "group_center"]
    batch = trainer.collect(1, iteration=0)
    expected = normalize_advantages(batch.rewards, mode="group_center", group_ids=torch.arange(4) // 2)
    torch.testing.assert_close(batch.advantages, expected)
    with pytest.raises(ValueError, match="tasks.1.group_size"):
        tiny_config(tmp_path, TWO_TASKS, "tasks.1.advantage_mode=group", "tasks.1.group_size=1").validate()
    with pytest.raises(ValueError, match="tasks.0.advantage_mode"):
        tiny_config(tmp_path, "tasks.0.advantage_mode=grpo").validate()


def test_min_step_std_keeps_near_deterministic_steps_out_of_training(tmp_path: Path, monkeypatch) -> None:
    from rlsd.sampling import step_stds

    trainer = RLTrainer(tiny_config(tmp_path / "a", "pretrain.enabled=false"))
    stds = step_stds(trainer.model.scheduler)
    smallest = int(stds.argmin())
    assert bool((stds > 0).all())  # all 3 steps have a density, so only the threshold can drop one
    threshold = float(stds.sort().values[:2].mean())  # between the smallest std and the next
    trainer = RLTrainer(tiny_config(tmp_path / "b", "pretrain.enabled=false", f"train.min_step_std={threshold}"))
    trained: list[int] = []
    monkeypatch.setattr(trainer, "policy_step", lambda batches, j, tasks: trained.append(j) or {})
    batch = trainer.collect(0, 0)
    for iteration in range(10):
        trainer.policy_updates([batch], [0], iteration)
    assert smallest not in trained and set(trained) == set(range(3)) - {smallest}
    strict = RLTrainer(tiny_config(tmp_path / "c", "pretrain.enabled=false", f"train.min_step_std={float(stds.max())}"))
    with pytest.raises(ValueError, match="min_step_std"):
        strict.policy_updates([batch], [0], 0)
    with pytest.raises(ValueError, match="train.min_step_std"):
        tiny_config(tmp_path / "d", "train.min_step_std=-0.1").validate()


def test_step_grad_norms_tool_reports_every_stochastic_step(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).parents[1] / "tools" / "step_grad_norms.py"
    spec = importlib.util.spec_from_file_location("step_grad_norms", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    table = tool.step_grad_norms(tiny_config(tmp_path, TWO_TASKS, "pretrain.enabled=false"), iteration=0)
    assert table["j"].tolist() == [0, 1, 2] and bool((table["std"] > 0).all())
    norms = table[["grad_norm/jpeg", "grad_norm/jpeg_b"]].to_numpy()
    assert (norms > 0).all() and np.isfinite(norms).all()
