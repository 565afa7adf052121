"""A tiny random ImageReward folder in the *official* checkpoint layout (tests and CPU notebook).

Keys and shapes follow the official ``ImageReward.pt`` (timm-style BLIP ViT under
``blip.visual_encoder.*``, med.py BERT with cross-attention under ``blip.text_encoder.*``, BLIP's
``vision_proj``/``text_proj`` and the ``mlp.layers.*`` head); only the sizes are small.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["TINY_VOCAB", "official_imagereward_shapes", "build_tiny_imagereward_folder"]

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "an", "the", "of", "photo", "portrait", "cat", "dog",
              "red", "blue", "green", "astronaut", "coffee", "cup", "and", "next", "to", "near", "on", "in", "with",
              "painting", "beautiful", "city", "night", "##s", "##ing", "##ed"]


def official_imagereward_shapes(vit_width: int = 64, vit_depth: int = 2, patch: int = 16, image_size: int = 32,
                                text_hidden: int = 32, text_layers: int = 2, text_intermediate: int = 64,
                                vocab_size: int = 40, max_positions: int = 40, embed_dim: int = 16,
                                head_widths: tuple[int, int, int, int] = (32, 16, 8, 4)) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an ImageReward checkpoint (the real one: 1024, 24, 16, 224, 768, 12, 3072, 30524, 512, 256)."""
    shapes: dict[str, tuple[int, ...]] = {}
    v, grid = "blip.visual_encoder.", image_size // patch
    shapes.update({v + "cls_token": (1, 1, vit_width), v + "pos_embed": (1, 1 + grid * grid, vit_width),
                   v + "patch_embed.proj.weight": (vit_width, 3, patch, patch), v + "patch_embed.proj.bias": (vit_width,),
                   v + "norm.weight": (vit_width,), v + "norm.bias": (vit_width,)})
    for i in range(vit_depth):
        b = f"{v}blocks.{i}."
        for name, shape in [("norm1", (vit_width,)), ("norm2", (vit_width,)), ("attn.qkv", (3 * vit_width, vit_width)),
                            ("attn.proj", (vit_width, vit_width)), ("mlp.fc1", (4 * vit_width, vit_width)),
                            ("mlp.fc2", (vit_width, 4 * vit_width))]:
            shapes[b + name + ".weight"], shapes[b + name + ".bias"] = shape, shape[:1]
    t, h = "blip.text_encoder.", text_hidden
    shapes.update({t + "embeddings.word_embeddings.weight": (vocab_size, h), t + "embeddings.position_embeddings.weight": (max_positions, h),
                   t + "embeddings.LayerNorm.weight": (h,), t + "embeddings.LayerNorm.bias": (h,),
                   t + "embeddings.position_ids": (1, max_positions)})
    for i in range(text_layers):
        b = f"{t}encoder.layer.{i}."
        linears = [("attention.self.query", (h, h)), ("attention.self.key", (h, h)), ("attention.self.value", (h, h)),
                   ("attention.output.dense", (h, h)), ("crossattention.self.query", (h, h)),
                   ("crossattention.self.key", (h, vit_width)), ("crossattention.self.value", (h, vit_width)),
                   ("crossattention.output.dense", (h, h)), ("intermediate.dense", (text_intermediate, h)),
                   ("output.dense", (h, text_intermediate))]
        norms = ["attention.output.LayerNorm", "crossattention.output.LayerNorm", "output.LayerNorm"]
        for name, shape in linears + [(n, (h,)) for n in norms]:
            shapes[b + name + ".weight"], shapes[b + name + ".bias"] = shape, shape[:1]
    shapes.update({"blip.vision_proj.weight": (embed_dim, vit_width), "blip.vision_proj.bias": (embed_dim,),
                   "blip.text_proj.weight": (embed_dim, h), "blip.text_proj.bias": (embed_dim,)})
    dims = (h, *head_widths, 1)
    for layer, (d_in, d_out) in zip((0, 2, 4, 6, 7), zip(dims[:-1], dims[1:])):
        shapes[f"mlp.layers.{layer}.weight"], shapes[f"mlp.layers.{layer}.bias"] = (d_out, d_in), (d_out,)
    return shapes


def build_tiny_imagereward_folder(folder: str | Path, *, seed: int = 0) -> Path:
    """Write ImageReward.pt (random, official keys), med_config.json and tokenizer/ to ``folder``."""
    folder = Path(folder)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    vocab_size = len(TINY_VOCAB) + 2  # + [DEC], [ENC] added by BLIP's tokenizer setup
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_imagereward_shapes(vocab_size=vocab_size).items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[1]).view(shape)
        elif "LayerNorm.weight" in key or key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[key] = (0.2 if key.startswith("mlp.") else 0.05) * torch.randn(shape, generator=generator)
    torch.save(state, folder / "ImageReward.pt")
    med = {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 32, "intermediate_size": 64,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 2,
           "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": vocab_size,
           "encoder_width": 64, "add_cross_attention": True}
    (folder / "med_config.json").write_text(json.dumps(med, indent=1))
    (folder / "tokenizer" / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    return folder
