"""ImageReward: official key layout -> transformers BLIP modules, strict loading, deterministic scores."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from rlsd.rewards import build_reward
from rlsd.rewards.imagereward import IMAGEREWARD_MEAN, IMAGEREWARD_STD, ImageRewardReward
from rlsd.rewards.imagereward_tiny import build_tiny_imagereward_folder, official_imagereward_shapes


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory):
    return build_tiny_imagereward_folder(tmp_path_factory.mktemp("imagereward"), seed=0)


def _images():
    return torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))


def _timm_vit(state, pixels, heads=1):
    """Independent timm-style forward of BLIP's ViT on the raw official tensors."""
    p = lambda k: state[f"blip.visual_encoder.{k}"]  # noqa: E731
    x = F.conv2d(pixels, p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), stride=p("patch_embed.proj.weight").shape[-1])
    x = torch.cat([p("cls_token").expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], 1) + p("pos_embed")
    ln = lambda y, n: F.layer_norm(y, y.shape[-1:], p(f"{n}.weight"), p(f"{n}.bias"), eps=1e-6)  # noqa: E731
    for i in range(2):
        b = f"blocks.{i}."
        q, k, v = F.linear(ln(x, b + "norm1"), p(b + "attn.qkv.weight"), p(b + "attn.qkv.bias")).chunk(3, dim=-1)
        split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
        att = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)
        x = x + F.linear(att, p(b + "attn.proj.weight"), p(b + "attn.proj.bias"))
        hidden = F.gelu(F.linear(ln(x, b + "norm2"), p(b + "mlp.fc1.weight"), p(b + "mlp.fc1.bias")))
        x = x + F.linear(hidden, p(b + "mlp.fc2.weight"), p(b + "mlp.fc2.bias"))
    return ln(x, "norm")


def test_checkpoint_has_official_keys(ir_dir):
    state = torch.load(ir_dir / "ImageReward.pt")
    assert {"blip.visual_encoder.blocks.1.attn.qkv.weight", "blip.text_encoder.encoder.layer.0.crossattention.self.key.weight",
            "mlp.layers.7.bias", "blip.vision_proj.weight"} <= set(state)
    real = official_imagereward_shapes(1024, 24, 16, 224, 768, 12, 3072, 30524, 512, 256, (1024, 128, 64, 16))
    assert real["blip.visual_encoder.pos_embed"] == (1, 197, 1024) and real["mlp.layers.0.weight"] == (1024, 768)


def test_vision_mapping_matches_independent_vit(ir_dir):
    reward = ImageRewardReward(ir_dir)
    state = torch.load(ir_dir / "ImageReward.pt")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = reward.model.vision(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(ours, _timm_vit(state, pixels), atol=1e-5, rtol=1e-4)


def test_scores_deterministic_and_normalised(ir_dir):
    reward = build_reward({"name": "imagereward", "model_dir": str(ir_dir)})
    prompts = ["a photo of a red cat", "an astronaut with a coffee cup"]
    scores, info = reward(_images(), prompts, [{}, {}])
    again, _ = build_reward({"name": "imagereward", "model_dir": str(ir_dir)})(_images(), prompts, [{}, {}])
    torch.testing.assert_close(scores, again)
    torch.testing.assert_close(scores, (info["raw_head"] - IMAGEREWARD_MEAN) / IMAGEREWARD_STD)
    assert scores[0] != scores[1]
    swapped, _ = reward(_images(), prompts[::-1], [{}, {}])
    assert not torch.allclose(swapped, scores)  # the text conditions the score
    tokens = reward.tokenizer(prompts, padding="max_length", truncation=True, max_length=35)["input_ids"]
    assert all(len(t) == 35 and t[0] == reward.tokenizer.cls_token_id for t in tokens)


def _rewrite(src, dst, edit):
    shutil.copytree(src, dst)
    state = torch.load(dst / "ImageReward.pt")
    edit(state)
    torch.save(state, dst / "ImageReward.pt")
    return dst


def test_missing_key_errors(ir_dir, tmp_path):
    folder = _rewrite(ir_dir, tmp_path / "m", lambda s: s.pop("blip.text_encoder.encoder.layer.1.crossattention.self.value.bias"))
    with pytest.raises(ValueError, match="missing keys \\['encoder.layer.1.crossattention.self.value.bias'\\]"):
        ImageRewardReward(folder)


def test_bogus_key_errors(ir_dir, tmp_path):
    folder = _rewrite(ir_dir, tmp_path / "b", lambda s: s.__setitem__("blip.visual_encoder.blocks.0.bogus.weight", torch.zeros(1)))
    with pytest.raises(ValueError, match="unexpected keys \\['blip.visual_encoder.blocks.0.bogus.weight'\\]"):
        ImageRewardReward(folder)
    folder = _rewrite(ir_dir, tmp_path / "c", lambda s: s.__setitem__("itm_head.weight", torch.zeros(1)))
    with pytest.raises(ValueError, match="itm_head.weight"):
        ImageRewardReward(folder)


def test_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no ImageReward.pt; expected ImageReward.pt \\+ med_config.json"):
        ImageRewardReward(tmp_path)


def test_padding_is_masked(ir_dir):
    """Extra [PAD] tokens must not change the score: the text attention mask is honoured."""
    reward = ImageRewardReward(ir_dir)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    outs = []
    for length in (35, 40):
        tokens = reward.tokenizer(["a red cat"], padding="max_length", max_length=length, return_tensors="pt")
        outs.append(reward.model(pixels, tokens["input_ids"], tokens["attention_mask"]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
