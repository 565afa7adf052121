"""Differentiable scoring for the reward-gradient methods (ReFL, DRaFT): ``fn(images, prompts) -> (B,)``.

``images`` are ``(B, 3, H, W)`` in [0, 1] *with* grad; the returned rewards keep the graph. A reward is
differentiable when it defines ``differentiable_score(images, prompts)`` or is one of the learned models below;
the reward model's own weights are frozen (only the diffusion model is trained).

=====================  ==========================================================
reward                 differentiable path
=====================  ==========================================================
``shapes_preference``  the ShapesWorld preference CNN (ImageReward analogue)
``imagereward``        BLIP ViT + BERT cross-attention head, normalised
``pickscore``          ``logit_scale.exp() * cos(CLIP text, CLIP image)``
``aesthetic``          LAION MLP head on the unit-norm CLIP image embedding
=====================  ==========================================================
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

Scorer = Callable[[Tensor, list[str]], Tensor]
DIFFERENTIABLE_REWARDS = ("shapes_preference", "imagereward", "pickscore", "aesthetic")


def _preference(reward: Any) -> Scorer:
    from rlsd.shapes.preference import tokenize

    model = reward.model.requires_grad_(False).eval()

    def score(images: Tensor, prompts: list[str]) -> Tensor:
        if images.shape[-2:] != (32, 32):
            raise ValueError(f"shapes_preference scores 32x32 images, got {tuple(images.shape[-2:])}")
        model.to(images.device)
        return model(images.float(), tokenize(prompts).to(images.device))
    return score


def _imagereward(reward: Any) -> Scorer:
    from rlsd.rewards.imagereward import IMAGEREWARD_MEAN, IMAGEREWARD_STD, MAX_LENGTH
    from rlsd.rewards.imaging import CLIP_MEAN, CLIP_STD, normalize, resize_center_crop

    reward.model.requires_grad_(False).eval()

    def score(images: Tensor, prompts: list[str]) -> Tensor:
        pixels = normalize(resize_center_crop(images.to(reward.device).float(), reward.image_size), CLIP_MEAN, CLIP_STD)
        tokens = reward.tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                                  return_tensors="pt")
        raw = reward.model(pixels, tokens["input_ids"].to(reward.device), tokens["attention_mask"].to(reward.device))
        return ((raw - IMAGEREWARD_MEAN) / IMAGEREWARD_STD).to(images.device)
    return score


def _clip_image_embeds(clip: Any, images: Tensor) -> Tensor:
    from rlsd.rewards.imaging import normalize, resize_center_crop

    pixels = normalize(resize_center_crop(images.to(clip.device).float(), clip.image_size), clip.mean, clip.std)
    embeds = clip.model.visual_projection(clip.model.vision_model(pixel_values=pixels).pooler_output)
    return embeds / embeds.norm(dim=-1, keepdim=True)


def _pickscore(reward: Any) -> Scorer:
    def score(images: Tensor, prompts: list[str]) -> Tensor:
        text = reward.clip.text_embeds(prompts)  # no grad needed: only the image side depends on the policy
        cos = (_clip_image_embeds(reward.clip, images) * text).sum(-1)
        return (reward.clip.model.logit_scale.exp().detach() * cos).to(images.device)
    return score


def _aesthetic(reward: Any) -> Scorer:
    def score(images: Tensor, prompts: list[str]) -> Tensor:
        return reward.head(_clip_image_embeds(reward.clip, images)).squeeze(-1).to(images.device)
    return score


_ADAPTERS: dict[str, Callable[[Any], Scorer]] = {
    "ShapesPreferenceReward": _preference, "ImageRewardReward": _imagereward, "PickScoreReward": _pickscore,
    "AestheticReward": _aesthetic}


def differentiable_reward(reward: Any, field: str, method: str) -> Scorer:
    """The differentiable scorer of ``reward``; ValueError naming ``field`` (e.g. ``tasks.0.reward``) if none."""
    own = getattr(reward, "differentiable_score", None)
    if callable(own):
        return own
    adapter = _ADAPTERS.get(type(reward).__name__)
    if adapter is None:
        raise ValueError(f"invalid config value {field}={getattr(reward, 'name', reward)!r}: train.method={method} "
                         "backpropagates the reward, which needs a differentiable reward model; use one of "
                         f"{', '.join(DIFFERENTIABLE_REWARDS)}.")
    return adapter(reward)


@torch.no_grad()
def check_matches(scorer: Scorer, reward: Any, images: Tensor, prompts: list[str]) -> float:
    """Largest |differentiable - reward| on ``images`` (a consistency check of an adapter)."""
    values, _ = reward(images, prompts, [{"group": i} for i in range(len(prompts))])
    return float((scorer(images, prompts).float().cpu() - values).abs().max())
