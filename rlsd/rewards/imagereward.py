"""ImageReward (Xu et al. 2023) rebuilt on transformers' BLIP modules, loading the official checkpoint.

Folder layout (``model_dir``)::

    ImageReward.pt      official state dict (huggingface.co/THUDM/ImageReward)
    med_config.json     BERT config of the BLIP text encoder (same repo)
    tokenizer/          bert-base-uncased tokenizer files (vocab.txt, tokenizer_config.json)

Model: BLIP ViT-L/16 at 224 px (``BlipVisionModel``) -> BERT text encoder with cross-attention to
the image tokens in every layer (``BlipTextModel``, the transformers port of BLIP's med.py) ->
the text [CLS] feature (768) -> MLP head 768-1024-128-64-16-1. Score ``(head - mean) / std`` with
the official ``mean = 0.16717362830052426``, ``std = 1.0333394966054072``. Prompts: padding to
``max_length=35``, truncation. Images: short-side bicubic resize to 224, center crop, CLIP mean/std.
The official code resizes a uint8 PIL image with PIL bicubic; we resize the float tensor with torch
bicubic + antialias, so scores can differ from the official pipeline in the low decimals (not yet
checked against the real weights: no hub access where this was written).

Official key -> module key (every checkpoint key is consumed; anything else is an error)::

    blip.visual_encoder.cls_token                -> vision.embeddings.class_embedding
    blip.visual_encoder.pos_embed                -> vision.embeddings.position_embedding
    blip.visual_encoder.patch_embed.proj.*       -> vision.embeddings.patch_embedding.*
    blip.visual_encoder.blocks.N.norm1/norm2.*   -> vision.encoder.layers.N.layer_norm1/layer_norm2.*
    blip.visual_encoder.blocks.N.attn.qkv/proj.* -> vision.encoder.layers.N.self_attn.qkv/projection.*
    blip.visual_encoder.blocks.N.mlp.fc1/fc2.*   -> vision.encoder.layers.N.mlp.fc1/fc2.*
    blip.visual_encoder.norm.*                   -> vision.post_layernorm.*
    blip.text_encoder.<rest>                     -> text.<rest>  (names already match med.py)
    mlp.layers.{0,2,4,6,7}.*                     -> head.layers.{0,2,4,6,7}.*
    blip.text_encoder.embeddings.position_ids    checked == arange, not a weight
    blip.vision_proj.*, blip.text_proj.*         BLIP contrastive projections, unused by the score
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from rlsd.rewards.base import Reward
from rlsd.rewards.heads import MLPHead, load_strict
from rlsd.rewards.imaging import CLIP_MEAN, CLIP_STD, normalize, require_folder, resize_center_crop
from rlsd.rewards.registry import register_reward

__all__ = ["IMAGEREWARD_MEAN", "IMAGEREWARD_STD", "map_imagereward_state", "ImageRewardModel", "ImageRewardReward"]

IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072
MAX_LENGTH = 35
LAYOUT = "ImageReward.pt + med_config.json + tokenizer/ (bert-base-uncased) as in huggingface.co/THUDM/ImageReward"
_VIT_RULES = [
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
]
_UNUSED = re.compile(r"blip\.(vision_proj|text_proj)\.(weight|bias)")
_POSITION_IDS = "blip.text_encoder.embeddings.position_ids"


def map_imagereward_state(state: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Split an official ImageReward state dict into ``{"vision": .., "text": .., "head": ..}`` module dicts.

    Raises:
        ValueError: listing every key that matches no rule.
    """
    out: dict[str, dict[str, Tensor]] = {"vision": {}, "text": {}, "head": {}}
    unknown = []
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            rest = key[len("blip.visual_encoder."):]
            target = next((re.sub(f"^{p}$", r, rest) for p, r in _VIT_RULES if re.fullmatch(p, rest)), None)
            (unknown.append(key) if target is None else out["vision"].__setitem__(target, value))
        elif key == _POSITION_IDS:
            if not torch.equal(value.flatten().long(), torch.arange(value.numel())):
                raise ValueError(f"{_POSITION_IDS} is not 0..n-1; the checkpoint is not an ImageReward checkpoint")
        elif key.startswith("blip.text_encoder."):
            out["text"][key[len("blip.text_encoder."):]] = value
        elif re.fullmatch(r"mlp\.layers\.[0246]\.(weight|bias)|mlp\.layers\.7\.(weight|bias)", key):
            out["head"][key[len("mlp."):]] = value
        elif not _UNUSED.fullmatch(key):
            unknown.append(key)
    if unknown:
        raise ValueError(f"ImageReward checkpoint has unexpected keys {sorted(unknown)}; expected the official layout ({LAYOUT})")
    return out


def _vision_config(vision: dict[str, Tensor], num_heads: int | None):
    from transformers import BlipVisionConfig

    for key in ("embeddings.class_embedding", "embeddings.position_embedding", "embeddings.patch_embedding.weight",
                "encoder.layers.0.mlp.fc1.weight"):
        if key not in vision:
            raise ValueError(f"ImageReward checkpoint has no vision weight for {key}; expected the official layout ({LAYOUT})")
    width = vision["embeddings.class_embedding"].shape[-1]
    patch = vision["embeddings.patch_embedding.weight"].shape[-1]
    grid = int(round((vision["embeddings.position_embedding"].shape[1] - 1) ** 0.5))
    depth = 1 + max(int(k.split(".")[2]) for k in vision if k.startswith("encoder.layers."))
    return BlipVisionConfig(hidden_size=width, intermediate_size=vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
                            num_hidden_layers=depth, num_attention_heads=num_heads or max(1, width // 64),
                            image_size=grid * patch, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-6,
                            attention_dropout=0.0)


def _text_config(med_config: dict, encoder_width: int):
    from transformers import BlipTextConfig

    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "layer_norm_eps", "hidden_act", "pad_token_id")
    kwargs = {k: med_config[k] for k in keys if k in med_config}
    vocab = kwargs.get("vocab_size", 30524)
    special = {"bos_token_id": vocab - 2, "sep_token_id": 102 if vocab > 102 else None}  # [DEC] is the 2nd-last token in BLIP
    return BlipTextConfig(**kwargs, **special, encoder_hidden_size=encoder_width, is_decoder=True, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)


class ImageRewardModel(nn.Module):
    """BLIP ViT + cross-attention BERT + MLP head; ``forward`` returns raw head outputs (B,)."""

    def __init__(self, state: dict[str, Tensor], med_config: dict, vision_heads: int | None = None):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        parts = map_imagereward_state(state)
        self.vision = BlipVisionModel(_vision_config(parts["vision"], vision_heads))
        self.text = BlipTextModel(_text_config(med_config, self.vision.config.hidden_size), add_pooling_layer=False)
        input_dim, widths = MLPHead.widths_from(parts["head"])
        self.head = MLPHead(input_dim, widths)
        load_strict(self.vision, parts["vision"], "ImageReward visual encoder (blip.visual_encoder.*)")
        load_strict(self.text, {**parts["text"], **self._buffers_of(self.text)}, "ImageReward text encoder (blip.text_encoder.*)")
        load_strict(self.head, parts["head"], "ImageReward head (mlp.layers.*)")
        self.eval().requires_grad_(False)

    @staticmethod
    def _buffers_of(module: nn.Module) -> dict[str, Tensor]:
        params = {n for n, _ in module.named_parameters()}
        return {k: v for k, v in module.state_dict().items() if k not in params}

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """pixel_values (B, 3, S, S) normalised; input_ids/attention_mask (B, 35) -> head (B,)."""
        image_tokens = self.vision(pixel_values=pixel_values).last_hidden_state  # (B, 1 + N, Dv)
        image_mask = torch.ones(image_tokens.shape[:2], dtype=torch.long, device=image_tokens.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_tokens,
                         encoder_attention_mask=image_mask, is_decoder=False).last_hidden_state
        return self.head(text[:, 0, :].float()).squeeze(-1)


class ImageRewardReward(Reward):
    """ImageReward score ``(head(text_cls) - mean) / std`` from a local official checkpoint folder."""

    name = "imagereward"

    def __init__(self, model_dir: str | Path, device: str = "cpu", vision_heads: int | None = None,
                 tokenizer_dir: str | Path | None = None):
        from transformers import BertTokenizer

        folder = require_folder(model_dir, ("ImageReward.pt", "med_config.json"), LAYOUT)
        tokenizer_dir = require_folder(tokenizer_dir or folder / "tokenizer", ("vocab.txt",), "a bert-base-uncased tokenizer folder")
        state = torch.load(folder / "ImageReward.pt", map_location="cpu", weights_only=True)
        self.model = ImageRewardModel(state, json.loads((folder / "med_config.json").read_text()), vision_heads).to(device)
        self.tokenizer = BertTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})  # as BLIP
        if len(self.tokenizer) > self.model.text.config.vocab_size:
            raise ValueError(f"tokenizer in {tokenizer_dir} has {len(self.tokenizer)} tokens > med_config vocab_size")
        self.image_size = self.model.vision.config.image_size
        self.device = torch.device(device)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: list[str], metadata: list[dict]) -> tuple[Tensor, dict]:
        pixels = normalize(resize_center_crop(images.to(self.device, torch.float32), self.image_size), CLIP_MEAN, CLIP_STD)
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        raw = self.model(pixels, tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)).cpu()
        return (raw - IMAGEREWARD_MEAN) / IMAGEREWARD_STD, {"raw_head": raw}


@register_reward("imagereward")
def imagereward(model_dir: str, device: str = "cpu", vision_heads: int | None = None, tokenizer_dir: str | None = None) -> ImageRewardReward:
    """ImageReward from ``model_dir`` (layout in the module docstring)."""
    return ImageRewardReward(model_dir, device, vision_heads, tokenizer_dir)
