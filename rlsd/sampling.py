"""DDIM sampling with per-step Gaussian log-probabilities (the policy of the RL method).

Each DDIM step with ``eta > 0`` is a Gaussian policy ``pi(x_{t-1} | x_t, c)`` with mean given by the
DDIM update and standard deviation ``sigma_t = eta * sqrt(var_t)``. We track
``log pi(x_{t-1} | x_t, c)`` as the Gaussian log-density MEAN over the non-batch dims (as in the paper).

Name map (paper -> code):

==========================  ==============================
paper                       code
==========================  ==============================
x_t                         ``sample`` / ``latents``
x_{t-1}                     ``prev_sample`` / ``next_latents``
epsilon_theta(x_t, t, c)    ``model_output`` (after CFG)
sigma_t                     ``StepOutput.std``
log pi(x_{t-1}|x_t, c)      ``StepOutput.log_prob``
w (guidance)                ``guidance_scale``
==========================  ==============================

``ddim_step_with_logprob`` reads only ``scheduler.alphas_cumprod``, ``scheduler.final_alpha_cumprod``,
``scheduler.config`` and ``scheduler.num_inference_steps``; it never mutates the scheduler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm import tqdm  # plain tqdm: tqdm.auto needs ipywidgets in notebooks

if TYPE_CHECKING:
    from rlsd.models import T2IModel

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# Lower bound on std used only inside the log-density (eta == 0 or a zero-variance final step).
Generators = torch.Generator | list[torch.Generator] | None  # one generator, or one per sample


@dataclass
class StepOutput:
    """Result of one DDIM step.

    Attributes:
        prev_sample: ``(B, C, H, W)`` x_{t-1}, in the dtype of ``sample``.
        log_prob: ``(B,)`` float32 Gaussian log-density of ``prev_sample``, mean over non-batch dims.
        mean: ``(B, C, H, W)`` float32 mean of the step distribution.
        std: ``(B, 1, 1, 1)`` float32 standard deviation (broadcastable to ``(B, C, H, W)``).
    """

    prev_sample: Tensor
    log_prob: Tensor
    mean: Tensor
    std: Tensor


def _per_sample_timesteps(timestep: int | Tensor, batch: int) -> Tensor:
    """Return timesteps as a CPU long tensor of shape ``(B,)`` from an int, 0-d or ``(B,)`` tensor."""
    t = torch.as_tensor(timestep).detach().to("cpu", torch.long)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"timestep has shape {tuple(t.shape)}; pass an int, a 0-d tensor or a ({batch},) tensor.")
    return t


def _alphas(scheduler: Any, t: Tensor) -> tuple[Tensor, Tensor]:
    """Gather ``alpha_prod_t`` and ``alpha_prod_t_prev`` per sample, each ``(B,)`` float32 on CPU."""
    if scheduler.num_inference_steps is None:
        raise ValueError("scheduler.num_inference_steps is None; call scheduler.set_timesteps(num_steps) first.")
    step = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    prev_t = t - step
    alphas_cumprod = scheduler.alphas_cumprod.to("cpu", torch.float32)
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32).to("cpu")
    alpha_t = alphas_cumprod[t]
    alpha_prev = torch.where(prev_t >= 0, alphas_cumprod[prev_t.clamp(min=0)], final)
    return alpha_t, alpha_prev


def _pred_x0_eps(scheduler: Any, model_output: Tensor, sample: Tensor, a_t: Tensor) -> tuple[Tensor, Tensor]:
    """Predicted x_0 and epsilon (both ``(B, C, H, W)``) for the scheduler's prediction type, with clipping."""
    config = scheduler.config
    b_t = 1 - a_t
    kind = config.prediction_type
    if kind == "epsilon":
        x0 = (sample - b_t.sqrt() * model_output) / a_t.sqrt()
        eps = model_output
    elif kind == "sample":
        x0 = model_output
        eps = (sample - a_t.sqrt() * x0) / b_t.sqrt()
    elif kind == "v_prediction":
        x0 = a_t.sqrt() * sample - b_t.sqrt() * model_output
        eps = a_t.sqrt() * model_output + b_t.sqrt() * sample
    else:
        raise ValueError(f"scheduler prediction_type {kind!r} is unsupported; use epsilon, sample or v_prediction.")
    if getattr(config, "thresholding", False):
        raise ValueError("scheduler.config.thresholding=True is unsupported by ddim_step_with_logprob; set it False.")
    if getattr(config, "clip_sample", False):
        x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    return x0, eps


def randn(shape: tuple[int, ...], generator: Generators, device: torch.device | str) -> Tensor:
    """Standard normal float32 noise of ``shape = (B, ...)`` on ``device``.

    ``generator`` may be None, one ``torch.Generator`` (noise drawn on its device), or a list of ``B``
    generators: row i is then drawn from ``generator[i]`` alone, so a sample's noise does not depend on
    which other samples share its batch.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one per sample.")
        rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=torch.float32).to(device)
                for g in generator]
        return torch.stack(rows)
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device)


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Gaussian log-density of ``x`` under N(mean, std^2), mean over non-batch dims.

    Args:
        x, mean: ``(B, ...)``; std: broadcastable to ``x``. Returns ``(B,)`` float32.

    Where ``std == 0`` the step is deterministic (a point mass, no density); those entries
    contribute 0, so a fully deterministic step has ``log_prob == 0`` and ratio exactly 1.
    """
    x, mean, std = x.float(), mean.float(), std.float()
    deterministic = std <= 0
    safe_std = torch.where(deterministic, torch.ones_like(std), std)  # keeps every branch finite
    log_density = -((x - mean) ** 2) / (2 * safe_std**2) - torch.log(safe_std) - _LOG_SQRT_2PI
    log_density = torch.where(deterministic, torch.zeros_like(log_density), log_density)
    return log_density.mean(dim=tuple(range(1, x.ndim)))


def step_stds(scheduler: Any, eta: float = 1.0) -> Tensor:
    """``(T,)`` std of every DDIM step of ``scheduler.timesteps`` (call ``set_timesteps`` first).

    The trainer draws its policy-gradient timesteps among the steps with ``std > 0``.
    """
    a_t, a_prev = _alphas(scheduler, scheduler.timesteps.to("cpu", torch.long))
    return eta * (((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)).clamp(min=0).sqrt()


def ddim_step_with_logprob(
    scheduler: Any,
    model_output: Tensor,
    timestep: int | Tensor,
    sample: Tensor,
    eta: float = 1.0,
    generator: Generators = None,
    prev_sample: Tensor | None = None,
) -> StepOutput:
    """One DDIM step (identical to ``DDIMScheduler.step``) that also returns the step's log-probability.

    Args:
        scheduler: a ``DDIMScheduler`` on which ``set_timesteps`` was called (only read, never mutated).
        model_output: ``(B, C, H, W)`` UNet output (after CFG) at ``timestep``.
        timestep: int, 0-d tensor, or ``(B,)`` tensor of per-sample timesteps.
        sample: ``(B, C, H, W)`` x_t.
        eta: DDIM noise weight; the log-prob needs ``eta > 0``. A step whose std is 0 (``eta == 0``,
            or the last step of a scheduler whose final timestep is 0, e.g. ``steps_offset=0``) is
            deterministic and has no density: its ``log_prob`` is 0 and it carries no policy gradient.
        generator: RNG for the step noise (used only when ``prev_sample`` is None): one generator or a
            list of ``B`` (see ``randn``).
        prev_sample: ``(B, C, H, W)`` x_{t-1} to score instead of sampling; returned unchanged.

    Returns:
        ``StepOutput``; the math runs in float32, ``prev_sample`` is cast to ``sample.dtype`` before scoring.
    """
    t = _per_sample_timesteps(timestep, sample.shape[0])
    a_t, a_prev = _alphas(scheduler, t)
    variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
    std = (eta * variance.sqrt()).to(sample.device).view(-1, 1, 1, 1)
    a_t = a_t.to(sample.device).view(-1, 1, 1, 1)
    a_prev = a_prev.to(sample.device).view(-1, 1, 1, 1)

    x0, eps = _pred_x0_eps(scheduler, model_output.float(), sample.float(), a_t)
    direction = (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    mean = a_prev.sqrt() * x0 + direction

    if prev_sample is None:
        noise = randn(tuple(mean.shape), generator, mean.device)
        prev_sample = (mean + std * noise).to(sample.dtype)
    elif prev_sample.shape != sample.shape:
        raise ValueError(f"prev_sample has shape {tuple(prev_sample.shape)}; expected {tuple(sample.shape)}.")
    log_prob = gaussian_log_prob(prev_sample.detach(), mean, std)
    return StepOutput(prev_sample=prev_sample, log_prob=log_prob, mean=mean, std=std)


@dataclass
class Trajectory:
    """Sampled DDIM trajectories.

    Attributes:
        latents: ``(B, T+1, C, H, W)`` x_T ... x_0 on the model device, model dtype.
        log_probs: ``(B, T)`` float32 log pi(x_{t-1} | x_t, c) of each step.
        timesteps: ``(T,)`` long CPU tensor of the scheduler timesteps (descending).
        images: ``(B, 3, H, W)`` float32 in [0, 1], on CPU.
        prompt_embeds: ``(B, L, D)`` conditional text embeddings.
        negative_prompt_embeds: ``(B, L, D)`` unconditional (CFG) embeddings.
        prompts: the ``B`` prompts.
    """

    latents: Tensor
    log_probs: Tensor
    timesteps: Tensor
    images: Tensor
    prompt_embeds: Tensor
    negative_prompt_embeds: Tensor
    prompts: list[str]


def guided_model_output(
    model: "T2IModel",
    latents: Tensor,
    timestep: Tensor,
    prompt_embeds: Tensor,
    negative_prompt_embeds: Tensor | None,
    guidance_scale: float,
) -> Tensor:
    """UNet noise prediction with classifier-free guidance, one batched UNet call.

    Args:
        latents: ``(B, C, H, W)``; timestep: ``(B,)`` long; prompt_embeds / negative_prompt_embeds: ``(B, L, D)``.
        guidance_scale: ``<= 1`` disables CFG (conditional pass only).

    Returns:
        ``(B, C, H, W)`` ``uncond + w * (cond - uncond)``.
    """
    timestep = timestep.to(latents.device)
    model_in = model.scheduler.scale_model_input(latents, timestep)
    if guidance_scale <= 1.0:
        return model.unet(model_in, timestep, encoder_hidden_states=prompt_embeds).sample
    if negative_prompt_embeds is None:
        raise ValueError("negative_prompt_embeds is None but guidance_scale > 1; pass the embeddings of ''.")
    out = model.unet(
        torch.cat([model_in, model_in]),
        torch.cat([timestep, timestep]),
        encoder_hidden_states=torch.cat([negative_prompt_embeds, prompt_embeds]),
    ).sample
    uncond, cond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def _initial_latents(model: "T2IModel", batch: int, generator: Generators) -> Tensor:
    """x_T ~ N(0, I) * init_noise_sigma, ``(B, C, h, w)``, drawn on the generator's device."""
    size = model.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    shape = (batch, model.latent_channels, h, w)
    latents = randn(shape, generator, model.device)
    return (latents * model.scheduler.init_noise_sigma).to(model.dtype)


def encode_unique(model: "T2IModel", prompts: list[str]) -> Tensor:
    """``(B, L, D)`` text embeddings of ``prompts``, running the text encoder once per distinct prompt."""
    unique = list(dict.fromkeys(prompts))
    index = torch.tensor([unique.index(p) for p in prompts])
    return model.encode_prompts(unique)[index.to(model.device)]


def _sample_chunk(model: "T2IModel", generator: Generators, prompt_embeds: Tensor, negative_prompt_embeds: Tensor,
                  timesteps: Tensor, guidance_scale: float, eta: float, progress: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Latents ``(b, T+1, C, H, W)``, log-probs ``(b, T)`` and CPU images ``(b, 3, H, W)`` of one micro-batch."""
    batch = prompt_embeds.shape[0]
    x = _initial_latents(model, batch, generator)
    all_latents, all_log_probs = [x], []
    for t in tqdm(timesteps, disable=not progress, desc="sampling"):
        t_batch = t.expand(batch)
        eps = guided_model_output(model, x, t_batch, prompt_embeds, negative_prompt_embeds, guidance_scale)
        out = ddim_step_with_logprob(model.scheduler, eps, t_batch, x, eta=eta, generator=generator)
        x = out.prev_sample
        all_latents.append(x)
        all_log_probs.append(out.log_prob)
    return torch.stack(all_latents, dim=1), torch.stack(all_log_probs, dim=1), model.decode(x).float().cpu()


@torch.no_grad()
def sample_trajectories(
    model: "T2IModel",
    prompts: list[str],
    *,
    num_steps: int = 50,
    guidance_scale: float = 7.0,
    eta: float = 1.0,
    generator: Generators = None,
    negative_prompt_embeds: Tensor | None = None,
    prompt_embeds: Tensor | None = None,
    progress: bool = False,
    batch_size: int = 0,
) -> Trajectory:
    """Sample ``B = len(prompts)`` DDIM trajectories with CFG, recording latents and per-step log-probs.

    Calls ``model.scheduler.set_timesteps(num_steps)`` (the scheduler keeps that state for ``rescore_step``).
    The unconditional embedding defaults to the encoding of ``""``; ``prompt_embeds`` ``(B, L, D)``
    overrides encoding ``prompts`` (each distinct prompt is encoded once). ``generator``: one
    ``torch.Generator`` or a list of ``B`` (sample i then draws x_T and all its step noise from
    ``generator[i]`` only). ``batch_size``: samples per UNet micro-batch (0 = all ``B`` at once); with a
    generator list every sample draws the same noise for any split. See ``Trajectory`` for the shapes.
    """
    prompts = list(prompts)
    batch = len(prompts)
    size = batch_size if 0 < batch_size < batch else batch
    if size < batch and not isinstance(generator, (list, tuple)):
        raise ValueError(f"sample batch_size={batch_size} splits {batch} samples; pass one generator per sample "
                         "(a list) so the noise does not depend on the split, or set batch_size=0.")
    if prompt_embeds is None:
        prompt_embeds = encode_unique(model, prompts)
    if negative_prompt_embeds is None and guidance_scale > 1.0:
        negative_prompt_embeds = model.encode_prompts([""]).expand(batch, -1, -1)
    if negative_prompt_embeds is None:
        negative_prompt_embeds = torch.zeros_like(prompt_embeds)
    prompt_embeds = prompt_embeds.to(model.device, model.dtype)
    negative_prompt_embeds = negative_prompt_embeds.to(model.device, model.dtype).contiguous()

    model.scheduler.set_timesteps(num_steps)
    timesteps = model.scheduler.timesteps.to("cpu", torch.long)
    parts = [_sample_chunk(model, generator if size == batch else list(generator[a:a + size]),
                           prompt_embeds[a:a + size], negative_prompt_embeds[a:a + size], timesteps,
                           guidance_scale, eta, progress) for a in range(0, batch, size)]
    latents, log_probs, images = (torch.cat(p) if len(parts) > 1 else p[0] for p in zip(*parts))
    return Trajectory(latents=latents, log_probs=log_probs, timesteps=timesteps, images=images,
                      prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, prompts=prompts)


def rescore_step(
    model: "T2IModel",
    latents: Tensor,
    next_latents: Tensor,
    timestep: int | Tensor,
    prompt_embeds: Tensor,
    negative_prompt_embeds: Tensor | None,
    *,
    guidance_scale: float,
    eta: float,
) -> StepOutput:
    """Log-prob of the recorded step ``latents -> next_latents`` under the current UNet (with grad).

    Uses the same CFG math and step as ``sample_trajectories``, so re-scoring a trajectory with unchanged
    weights gives exactly its recorded ``log_probs`` (ratio == 1). The scheduler must already hold the
    ``num_steps`` used for sampling (``set_timesteps``).

    Args:
        latents: ``(B, C, H, W)`` x_t; next_latents: ``(B, C, H, W)`` x_{t-1}.
        timestep: int, 0-d or ``(B,)`` tensor (per-sample timesteps allowed).
        prompt_embeds, negative_prompt_embeds: ``(B, L, D)``.
    """
    t = _per_sample_timesteps(timestep, latents.shape[0])
    eps = guided_model_output(model, latents, t, prompt_embeds, negative_prompt_embeds, guidance_scale)
    return ddim_step_with_logprob(model.scheduler, eps, t, latents, eta=eta, prev_sample=next_latents)
