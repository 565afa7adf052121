"""CLIP-based rewards on a tiny random CLIPModel folder written by the test (real loading path)."""

from __future__ import annotations

import pytest
import torch

from rlsd.rewards import build_reward
from rlsd.rewards.clip_rewards import ClipBackbone
from rlsd.rewards.heads import MLPHead
from rlsd.rewards.imaging import resize_center_crop
from rlsd.rewards.tiny import build_tiny_aesthetic_head, build_tiny_clip_folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip_folder(tmp_path_factory.mktemp("clip"), seed=0)


def _images(b=3, size=40):
    return torch.rand(b, 3, size, size + 8, generator=torch.Generator().manual_seed(0))


PROMPTS = ["a photo of a cat", "a red dog", "the phone"]


def test_resize_center_crop_shapes_and_identity():
    images = _images()
    assert resize_center_crop(images, 32).shape == (3, 3, 32, 32)
    square = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(resize_center_crop(square, 32), square)


def test_tokenizer_and_embeddings(clip_dir):
    clip = ClipBackbone(clip_dir)
    tokens = clip.tokenizer(["a photo of a cat"], padding="max_length", max_length=16)["input_ids"][0]
    assert tokens[0] == clip.tokenizer.bos_token_id and len(tokens) == 16
    assert clip.tokenizer.convert_tokens_to_ids("photo</w>") in tokens  # merges were applied
    img, txt = clip.image_embeds(_images()), clip.text_embeds(PROMPTS)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))


def test_pickscore_and_clipscore_closed_forms(clip_dir):
    images = _images()
    clip = ClipBackbone(clip_dir)
    cos = (clip.image_embeds(images) * clip.text_embeds(PROMPTS)).sum(-1)
    pick, info = build_reward({"name": "pickscore", "model_dir": str(clip_dir)})(images, PROMPTS, [{}] * 3)
    torch.testing.assert_close(pick, clip.model.logit_scale.exp() * cos)
    torch.testing.assert_close(info["cosine"], cos)
    score, _ = build_reward({"name": "clipscore", "model_dir": str(clip_dir), "weight": 100})(images, PROMPTS, [{}] * 3)
    torch.testing.assert_close(score, 100 * cos.clamp(min=0))
    again, _ = build_reward({"name": "pickscore", "model_dir": str(clip_dir)})(images, PROMPTS, [{}] * 3)
    torch.testing.assert_close(again, pick)  # deterministic across loads


def test_aesthetic_head_strict_loading(clip_dir, tmp_path):
    head_path = build_tiny_aesthetic_head(tmp_path / "head.pth", input_dim=16)
    reward = build_reward({"name": "aesthetic", "clip_dir": str(clip_dir), "head_path": str(head_path)})
    images = _images()
    values, _ = reward(images, PROMPTS, [{}] * 3)
    head = MLPHead(16, (32, 16, 8, 4))
    head.load_state_dict(torch.load(head_path))
    torch.testing.assert_close(values, head.eval()(ClipBackbone(clip_dir).image_embeds(images)).squeeze(-1))
    state = torch.load(head_path)
    state["layers.9.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="unexpected keys \\['layers.9.weight'\\]"):
        build_reward({"name": "aesthetic", "clip_dir": str(clip_dir), "head_path": str(tmp_path / "bad.pth")})


def test_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a CLIPModel"):
        build_reward({"name": "pickscore", "model_dir": str(tmp_path / "nope")})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_reward({"name": "clipscore", "model_dir": str(tmp_path)})
