"""DDIM step + log-prob against diffusers and closed forms; the sampler; ratio == 1 on re-scoring."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler
from helpers_tiny import tiny_pixel_model, tiny_sd

from rlsd.models import sd_ddim_scheduler
from rlsd.sampling import StepOutput, ddim_step_with_logprob, rescore_step, sample_trajectories

SHAPE = (3, 4, 5, 5)


def _scheduler(prediction_type: str = "epsilon", num_steps: int = 50, **overrides) -> DDIMScheduler:
    sched = sd_ddim_scheduler(prediction_type)
    if overrides:
        sched = DDIMScheduler.from_config(sched.config, **overrides)
    sched.set_timesteps(num_steps)
    return sched


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_step_matches_diffusers_every_timestep(prediction_type: str, eta: float) -> None:
    sched = _scheduler(prediction_type)
    gen = torch.Generator().manual_seed(0)
    assert len(sched.timesteps) == 50 and int(sched.timesteps[-1]) == 1  # last step uses final_alpha_cumprod
    for i, t in enumerate(sched.timesteps):
        sample, model_output = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i))
        ref = sched.step(model_output, t, sample, eta=eta, variance_noise=noise).prev_sample
        ref_mean = sched.step(model_output, t, sample, eta=eta, variance_noise=torch.zeros(SHAPE)).prev_sample
        out = ddim_step_with_logprob(sched, model_output, t, sample, eta=eta,
                                     generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(out.prev_sample, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.mean, ref_mean, atol=1e-5, rtol=1e-5)
        assert out.log_prob.shape == (SHAPE[0],) and torch.isfinite(out.log_prob).all()


def test_step_respects_clip_sample() -> None:
    sched = _scheduler(clip_sample=True, clip_sample_range=1.0)
    t = sched.timesteps[10]
    sample, model_output = 5 * torch.randn(SHAPE), torch.randn(SHAPE)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    ref = sched.step(model_output, t, sample, eta=1.0, variance_noise=noise).prev_sample
    out = ddim_step_with_logprob(sched, model_output, t, sample, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.prev_sample, ref, atol=1e-5, rtol=1e-5)
    unclipped = ddim_step_with_logprob(_scheduler(), model_output, t, sample, generator=torch.Generator())
    assert not torch.allclose(unclipped.mean, out.mean)  # clipping was active


def test_log_prob_is_gaussian_density_mean_over_dims() -> None:
    sched = _scheduler()
    sample, model_output, prev = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
    out = ddim_step_with_logprob(sched, model_output, sched.timesteps[20], sample, eta=0.7, prev_sample=prev)
    assert isinstance(out, StepOutput)
    assert out.prev_sample is prev
    expected = torch.distributions.Normal(out.mean, out.std.expand(SHAPE)).log_prob(prev).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_prob, expected, atol=1e-5, rtol=1e-5)
    # scoring the step's own sample reproduces the log-prob computed while sampling
    sampled = ddim_step_with_logprob(sched, model_output, sched.timesteps[20], sample, eta=0.7,
                                     generator=torch.Generator().manual_seed(1))
    again = ddim_step_with_logprob(sched, model_output, sched.timesteps[20], sample, eta=0.7,
                                   prev_sample=sampled.prev_sample)
    torch.testing.assert_close(again.log_prob, sampled.log_prob, atol=0, rtol=0)


def test_per_sample_timesteps_equal_loop() -> None:
    sched = _scheduler(num_steps=20)
    gen = torch.Generator().manual_seed(5)
    sample, model_output, prev = (torch.randn(SHAPE, generator=gen) for _ in range(3))
    t = sched.timesteps[torch.tensor([0, 7, 19])]  # includes the final step (prev timestep < 0)
    batched = ddim_step_with_logprob(sched, model_output, t, sample, prev_sample=prev)
    for i in range(SHAPE[0]):
        single = ddim_step_with_logprob(sched, model_output[i:i + 1], int(t[i]), sample[i:i + 1],
                                        prev_sample=prev[i:i + 1])
        torch.testing.assert_close(batched.log_prob[i:i + 1], single.log_prob, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(batched.mean[i:i + 1], single.mean, atol=1e-6, rtol=1e-6)


def test_step_rejects_unsupported_settings() -> None:
    sample = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="thresholding"):
        ddim_step_with_logprob(_scheduler(thresholding=True), sample, 500, sample)
    with pytest.raises(ValueError, match="timestep"):
        ddim_step_with_logprob(_scheduler(), sample, torch.tensor([1, 21]), sample)
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_step_with_logprob(sd_ddim_scheduler(), sample, 500, sample)


def test_step_keeps_gradient_through_model_output() -> None:
    sched = _scheduler()
    model_output = torch.randn(SHAPE, requires_grad=True)
    out = ddim_step_with_logprob(sched, model_output, sched.timesteps[5], torch.randn(SHAPE),
                                 prev_sample=torch.randn(SHAPE))
    out.log_prob.sum().backward()
    assert model_output.grad is not None and model_output.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def sd_and_traj():
    model = tiny_sd(seed=0)
    traj = sample_trajectories(model, ["a red circle", "the square", "cat", "blue"], num_steps=8,
                               guidance_scale=7.0, eta=1.0, generator=torch.Generator().manual_seed(0))
    return model, traj


def test_trajectory_shapes(sd_and_traj) -> None:
    model, traj = sd_and_traj
    assert traj.latents.shape == (4, 9, 4, 8, 8)
    assert traj.log_probs.shape == (4, 8) and traj.log_probs.dtype == torch.float32
    assert traj.timesteps.shape == (8,) and traj.timesteps[0] > traj.timesteps[-1]
    assert traj.images.shape == (4, 3, 16, 16) and 0 <= traj.images.min() and traj.images.max() <= 1
    assert traj.prompt_embeds.shape == traj.negative_prompt_embeds.shape == (4, 16, 32)
    torch.testing.assert_close(traj.negative_prompt_embeds[0], model.encode_prompts([""])[0])
    assert traj.prompts == ["a red circle", "the square", "cat", "blue"]


def test_rescoring_own_trajectory_gives_ratio_one(sd_and_traj) -> None:
    model, traj = sd_and_traj
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        j = torch.randint(0, 8, (4,), generator=gen)  # a different random timestep for each sample
        rows = torch.arange(4)
        out = rescore_step(model, traj.latents[rows, j], traj.latents[rows, j + 1], traj.timesteps[j],
                           traj.prompt_embeds, traj.negative_prompt_embeds, guidance_scale=7.0, eta=1.0)
        ratio = torch.exp(out.log_prob - traj.log_probs[rows, j])
        torch.testing.assert_close(ratio, torch.ones(4), atol=1e-5, rtol=0)
    # the same step under a different CFG scale is a different policy: the test can fail
    other = rescore_step(model, traj.latents[:, 2], traj.latents[:, 3], traj.timesteps[2], traj.prompt_embeds,
                         traj.negative_prompt_embeds, guidance_scale=3.0, eta=1.0)
    assert (other.log_prob - traj.log_probs[:, 2]).abs().max() > 1e-4


def test_rescore_has_gradient_through_unet() -> None:
    model = tiny_pixel_model(seed=0)
    traj = sample_trajectories(model, ["a", "b"], num_steps=4, guidance_scale=2.0,
                               generator=torch.Generator().manual_seed(0))
    out = rescore_step(model, traj.latents[:, 1], traj.latents[:, 2], traj.timesteps[1], traj.prompt_embeds,
                       traj.negative_prompt_embeds, guidance_scale=2.0, eta=1.0)
    out.log_prob.mean().backward()
    grads = [p.grad for p in model.unet.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_pixel_space_sampler_shapes_and_determinism() -> None:
    model = tiny_pixel_model(seed=0)
    kw = dict(num_steps=5, guidance_scale=4.0, eta=1.0)
    a = sample_trajectories(model, ["x", "y", "z"], generator=torch.Generator().manual_seed(0), **kw)
    b = sample_trajectories(model, ["x", "y", "z"], generator=torch.Generator().manual_seed(0), **kw)
    c = sample_trajectories(model, ["x", "y", "z"], generator=torch.Generator().manual_seed(1), **kw)
    assert a.latents.shape == (3, 6, 3, 16, 16) and a.images.shape == (3, 3, 16, 16)
    assert a.images.min() >= 0 and a.images.max() <= 1 and a.images.device.type == "cpu"
    torch.testing.assert_close(a.images, ((a.latents[:, -1] / 2 + 0.5).clamp(0, 1)))  # identity decode
    torch.testing.assert_close(a.latents, b.latents, atol=0, rtol=0)
    assert not torch.allclose(a.latents, c.latents)


def test_no_cfg_when_guidance_scale_at_most_one() -> None:
    model = tiny_pixel_model(seed=0)
    traj = sample_trajectories(model, ["x", "y"], num_steps=3, guidance_scale=1.0,
                               generator=torch.Generator().manual_seed(0))
    # with guidance 1 the negative embeddings must not matter
    out = rescore_step(model, traj.latents[:, 0], traj.latents[:, 1], traj.timesteps[0], traj.prompt_embeds,
                       torch.randn_like(traj.prompt_embeds), guidance_scale=1.0, eta=1.0)
    torch.testing.assert_close(out.log_prob, traj.log_probs[:, 0], atol=1e-6, rtol=0)


def test_per_sample_generators_make_samples_batch_independent() -> None:
    model = tiny_pixel_model(seed=0)
    kw = dict(num_steps=3, guidance_scale=3.0, eta=1.0)
    gens = [torch.Generator().manual_seed(s) for s in (11, 12, 13)]
    batch = sample_trajectories(model, ["x", "y", "z"], generator=gens, **kw)
    alone = sample_trajectories(model, ["z"], generator=[torch.Generator().manual_seed(13)], **kw)
    torch.testing.assert_close(batch.latents[2:], alone.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.log_probs[2:], alone.log_probs, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="generators"):
        sample_trajectories(model, ["x", "y"], generator=gens, **kw)


def test_deterministic_last_step_has_zero_log_prob_and_is_never_trained():
    """A scheduler whose last timestep is 0 (steps_offset=0) makes the final DDIM step deterministic.

    Its std is 0: the log-prob must be 0 (not a huge number from a clamped std), its ratio exactly 1,
    and the trainer's timestep draw must skip it.
    """
    from diffusers import DDIMScheduler

    from rlsd.iteration import choose_timesteps
    from rlsd.sampling import step_stds

    sched = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True, set_alpha_to_one=False, steps_offset=0)
    sched.set_timesteps(10)
    stds = step_stds(sched, eta=1.0)
    assert stds.shape == (10,) and stds[-1] == 0 and bool((stds[:-1] > 0).all())
    gen = torch.Generator().manual_seed(0)
    sample, model_output = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    out = ddim_step_with_logprob(sched, model_output, sched.timesteps[-1], sample, eta=1.0)
    assert torch.equal(out.log_prob, torch.zeros(2))
    moved = ddim_step_with_logprob(sched, model_output + 0.1, sched.timesteps[-1], sample, prev_sample=out.prev_sample)
    assert torch.equal(moved.log_prob, torch.zeros(2))  # ratio exactly 1, no inf/NaN
    for seed in range(20):
        chosen = choose_timesteps(10, 9, torch.Generator().manual_seed(seed), stds > 0)
        assert 9 not in chosen and len(set(chosen)) == 9
    with pytest.raises(ValueError, match="timesteps_per_iter"):
        choose_timesteps(10, 10, torch.Generator().manual_seed(0), stds > 0)


def _slot_sampled(model, prompts: list[str], batch_size: int, seed: int = 0, **kw):
    gens = [torch.Generator().manual_seed(1000 * seed + i) for i in range(len(prompts))]
    return sample_trajectories(model, prompts, generator=gens, batch_size=batch_size, **kw)


def test_sampling_micro_batches_give_the_same_trajectories() -> None:
    """``batch_size`` 16 (one pass) vs 4 (four micro-batches) under the same per-sample generators.

    The noise (x_T and every step's) is identical bit for bit; the UNet's float kernels may round rows
    differently for different batch sizes, so the trajectories agree to rounding, far below the
    difference a different seed makes.
    """
    model = tiny_sd(seed=0)
    prompts = [f"prompt {i % 4}" for i in range(16)]  # repeated prompts (encoded once each)
    kw = dict(num_steps=4, guidance_scale=5.0, eta=1.0)
    whole, split = _slot_sampled(model, prompts, 16, **kw), _slot_sampled(model, prompts, 4, **kw)
    assert split.latents.shape == whole.latents.shape == (16, 5, 4, 8, 8) and split.log_probs.shape == (16, 4)
    assert torch.equal(split.latents[:, 0], whole.latents[:, 0])
    scale = float(whole.latents.abs().max())  # CFG 5 on a random UNet: latents reach ~20
    torch.testing.assert_close(split.latents, whole.latents, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(split.log_probs, whole.log_probs, atol=1e-6, rtol=0)  # what the ratio sees
    for name in ("images", "prompt_embeds", "negative_prompt_embeds"):
        torch.testing.assert_close(getattr(split, name), getattr(whole, name), atol=1e-5, rtol=0, msg=name)
    other = _slot_sampled(model, prompts, 4, seed=1, **kw)
    assert (other.latents[:, -1] - whole.latents[:, -1]).abs().max() > 1e-2 * scale
    with pytest.raises(ValueError, match="batch_size"):
        sample_trajectories(model, prompts, generator=torch.Generator().manual_seed(0), batch_size=4, **kw)


def test_repeated_prompts_are_encoded_once_with_the_same_embeddings() -> None:
    model = tiny_sd(seed=0)
    calls = []
    encode = model.encode_prompts
    model.encode_prompts = lambda prompts: calls.append(list(prompts)) or encode(prompts)
    prompts = ["a red circle", "cat", "a red circle", "cat", "blue"]
    traj = sample_trajectories(model, prompts, num_steps=2, guidance_scale=5.0, generator=torch.Generator())
    assert calls == [["a red circle", "cat", "blue"], [""]]
    torch.testing.assert_close(traj.prompt_embeds, encode(prompts), atol=1e-6, rtol=0)
    torch.testing.assert_close(traj.negative_prompt_embeds, encode([""] * 5), atol=1e-6, rtol=0)
