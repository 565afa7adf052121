"""CLIP-based rewards: PickScore, LAION aesthetic score, CLIPScore.

All three load a ``CLIPModel`` folder (``config.json`` + weights + tokenizer files, optionally
``preprocessor_config.json``) from local disk and preprocess images with torch ops:
short-side resize to the vision ``image_size`` (bicubic, antialiased), center crop, CLIP mean/std.

==============  =====================================================================================
reward          value
==============  =====================================================================================
pickscore       ``logit_scale.exp() * cos(text, image)`` (Kirstain et al. 2023; folder = PickScore_v1
                with the CLIP-ViT-H-14 tokenizer/processor files copied in)
aesthetic       ``head(image_embeds / ||image_embeds||)`` (LAION improved-aesthetic-predictor on CLIP
                ViT-L/14; head = ``sac+logos+ava1-l14-linearMSE.pth``, keys layers.{0,2,4,6,7}.*)
clipscore       ``weight * max(cos(text, image), 0)``; ``weight=2.5`` is Hessel et al. 2021's
                CLIP-S, ``weight=100`` is torchmetrics' CLIPScore
==============  =====================================================================================
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rlsd.rewards.base import Reward
from rlsd.rewards.heads import MLPHead, load_strict
from rlsd.rewards.imaging import CLIP_MEAN, CLIP_STD, normalize, read_json, require_folder, resize_center_crop
from rlsd.rewards.registry import register_reward

__all__ = ["ClipBackbone", "PickScoreReward", "AestheticReward", "ClipScoreReward", "load_aesthetic_head"]

CLIP_LAYOUT = "a CLIPModel.save_pretrained folder plus its tokenizer files (vocab.json, merges.txt or tokenizer.json)"


class ClipBackbone:
    """A local CLIPModel + tokenizer; unit-norm image (B, P) and text (B, P) embeddings."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        folder = require_folder(folder, ("config.json",), CLIP_LAYOUT)
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        pre = read_json(folder / "preprocessor_config.json")
        self.mean, self.std = tuple(pre.get("image_mean", CLIP_MEAN)), tuple(pre.get("image_std", CLIP_STD))
        self.image_size = self.model.config.vision_config.image_size
        self.max_length = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        self.device = torch.device(device)

    @torch.no_grad()
    def image_embeds(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, P) unit-norm projected image embeddings."""
        pixels = normalize(resize_center_crop(images.to(self.device, torch.float32), self.image_size), self.mean, self.std)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        embeds = self.model.visual_projection(pooled)
        return embeds / embeds.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> Tensor:
        """B prompts -> (B, P) unit-norm projected text embeddings (padded to max length, truncated)."""
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        pooled = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                       attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
        embeds = self.model.text_projection(pooled)
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def cosine(self, images: Tensor, prompts: list[str]) -> Tensor:
        """(B,) cosine similarity of each image with its prompt."""
        return (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1).float().cpu()


class PickScoreReward(Reward):
    """PickScore = ``logit_scale.exp() * cos(text, image)``."""

    name = "pickscore"

    def __init__(self, model_dir: str | Path, device: str = "cpu"):
        self.clip = ClipBackbone(model_dir, device)

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        cos = self.clip.cosine(images, prompts)
        return self.clip.model.logit_scale.exp().item() * cos, {"cosine": cos}


def load_aesthetic_head(path: str | Path) -> MLPHead:
    """LAION aesthetic MLP head from a ``.pth`` / ``.safetensors`` state dict with keys layers.{0,2,4,6,7}.*."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aesthetic head {path} does not exist; download sac+logos+ava1-l14-linearMSE.pth from "
                                "github.com/christophschuhmann/improved-aesthetic-predictor")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    input_dim, widths = MLPHead.widths_from(state)
    head = MLPHead(input_dim, widths)
    load_strict(head, state, f"aesthetic head {path}")
    return head.eval().requires_grad_(False)


class AestheticReward(Reward):
    """LAION aesthetic predictor: MLP head on unit-norm CLIP image embeddings (prompt-independent)."""

    name = "aesthetic"

    def __init__(self, clip_dir: str | Path, head_path: str | Path, device: str = "cpu"):
        self.clip = ClipBackbone(clip_dir, device)
        self.head = load_aesthetic_head(head_path).to(device)
        projection = self.clip.model.config.projection_dim
        if self.head.layers[0].in_features != projection:
            raise ValueError(f"aesthetic head expects {self.head.layers[0].in_features}-d embeddings but {clip_dir} projects to {projection}")

    @torch.no_grad()
    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        return self.head(self.clip.image_embeds(images)).squeeze(-1).float().cpu(), {}


class ClipScoreReward(Reward):
    """CLIPScore ``weight * max(cos, 0)`` (weight 2.5: Hessel et al.; 100: torchmetrics)."""

    name = "clipscore"

    def __init__(self, model_dir: str | Path, weight: float = 2.5, device: str = "cpu"):
        self.clip, self.weight = ClipBackbone(model_dir, device), float(weight)

    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        cos = self.clip.cosine(images, prompts)
        return self.weight * cos.clamp(min=0), {"cosine": cos}


@register_reward("pickscore")
def pickscore(model_dir: str, device: str = "cpu") -> PickScoreReward:
    return PickScoreReward(model_dir, device)


@register_reward("aesthetic")
def aesthetic(clip_dir: str, head_path: str, device: str = "cpu") -> AestheticReward:
    return AestheticReward(clip_dir, head_path, device)


@register_reward("clipscore")
def clipscore(model_dir: str, weight: float = 2.5, device: str = "cpu") -> ClipScoreReward:
    return ClipScoreReward(model_dir, weight, device)
