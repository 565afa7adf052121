"""Tiny random-weight reward-model folders for tests and the CPU notebook (no hub access).

Each builder writes a folder in the *same layout* as the real model's, so the real loading code
is exercised: CLIP/PickScore (``CLIPModel.save_pretrained`` + tokenizer + preprocessor config),
the LAION aesthetic head (``.pth`` state dict), OWL-ViT (``OwlViTForObjectDetection`` folder) and
ImageReward (``ImageReward.pt`` + ``med_config.json`` + tokenizer, see
:func:`rlsd.rewards.imagereward_tiny.build_tiny_imagereward_folder`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlsd.models import TINY_TEXT_LENGTH, write_tiny_clip_tokenizer
from rlsd.rewards.heads import MLPHead
from rlsd.rewards.imaging import CLIP_MEAN, CLIP_STD

__all__ = ["build_tiny_clip_folder", "build_tiny_aesthetic_head", "build_tiny_owlvit_folder"]

# BPE merges of the reward models' tokenizer (rlsd.models.write_tiny_clip_tokenizer writes it); they differ from
# the tiny SD's, and changing them changes the tiny models' vocab size, weights and scores (pinned by notebook 01).
REWARD_MERGES = [("a", "n"), ("t", "h"), ("th", "e</w>"), ("o", "n</w>"), ("d", "o"), ("do", "g</w>"), ("c", "a"),
                 ("ca", "t</w>"), ("r", "e"), ("e", "d</w>"), ("p", "h"), ("o", "t"), ("ph", "ot"), ("phot", "o</w>")]


def _clip_sub_configs(vocab_size: int, image_size: int) -> tuple[dict, dict]:
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=TINY_TEXT_LENGTH, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                pad_token_id=vocab_size - 1)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    return text, vision


def _write_preprocessor(folder: Path, size: int) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "size": {"shortest_edge": size},
         "crop_size": {"height": size, "width": size}}))


def build_tiny_clip_folder(folder: str | Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Tiny random ``CLIPModel`` folder (stand-in for PickScore / CLIP ViT-L/14)."""
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    vocab_size = write_tiny_clip_tokenizer(folder, merges=REWARD_MERGES)
    text, vision = _clip_sub_configs(vocab_size, image_size)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    _write_preprocessor(folder, image_size)
    return folder


def build_tiny_aesthetic_head(path: str | Path, *, input_dim: int = 16, seed: int = 0) -> Path:
    """Random aesthetic MLP head saved as a ``.pth`` state dict (keys layers.{0,2,4,6,7}.*)."""
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(MLPHead(input_dim, (32, 16, 8, 4)).state_dict(), path)
    return path


def build_tiny_owlvit_folder(folder: str | Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Tiny random ``OwlViTForObjectDetection`` folder with its CLIP tokenizer."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    folder = Path(folder)
    vocab_size = write_tiny_clip_tokenizer(folder, merges=REWARD_MERGES)
    text, vision = _clip_sub_configs(vocab_size, image_size)
    torch.manual_seed(seed)
    model = OwlViTForObjectDetection(OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32))
    model.save_pretrained(folder)
    _write_preprocessor(folder, image_size)
    return folder
