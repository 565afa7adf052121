"""L_pre data sources and loss, and the fixed-seed evaluation / win-rate used by the trainer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlsd.evaluation import compare, evaluate, win_rate
from rlsd.models import build_tiny_pixel_model
from rlsd.pretrain_data import build_pretrain_source, denoising_loss
from rlsd.rewards import build_reward


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), colour, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_and_parquet_sources_resize_and_resume(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.png").write_bytes(_png((255, 0, 0)))
    (tmp_path / "b.png").write_bytes(_png((0, 0, 255)))
    rows = [{"file": "a.png", "caption": "red"}, {"file": "b.png", "caption": "blue"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.table({"image": [_png((255, 0, 0)), _png((0, 0, 255))], "caption": ["red", "blue"]}),
                   tmp_path / "d.parquet")
    for spec in ({"name": "folder", "path": str(tmp_path)}, {"name": "parquet", "path": str(tmp_path / "d.parquet")}):
        source = build_pretrain_source(spec, image_size=16, seed=3)
        images, captions = source.next_batch(6)
        assert images.shape == (6, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
        for img, cap in zip(images, captions):  # captions stay paired with their images
            assert (img[0].mean() > 0.9) == (cap == "red") and (img[2].mean() > 0.9) == (cap == "blue")
        state = source.state_dict()
        again = build_pretrain_source(spec, image_size=16, seed=3)
        again.load_state_dict(state)
        assert torch.equal(source.next_batch(4)[0], again.next_batch(4)[0])


def test_missing_caption_index_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="captions.jsonl or metadata.csv"):
        build_pretrain_source({"name": "folder", "path": str(tmp_path)}, image_size=16)
    with pytest.raises(ValueError, match="pretrain.dataset.name='laion'"):
        build_pretrain_source({"name": "laion"}, image_size=16)


def test_denoising_loss_matches_manual_epsilon_mse() -> None:
    model = build_tiny_pixel_model(seed=0)
    images, captions = torch.rand(2, 3, 16, 16), ["a", "b"]
    noise, timesteps = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    loss = denoising_loss(model, images, captions, noise=noise, timesteps=timesteps)
    x0 = images * 2 - 1
    noisy = model.scheduler.add_noise(x0, noise, timesteps)
    with torch.no_grad():
        pred = model.unet(noisy, timesteps, encoder_hidden_states=model.encode_prompts(captions)).sample
    torch.testing.assert_close(loss.detach(), torch.mean((pred - noise) ** 2))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())


def test_evaluation_is_seeded_and_batch_independent() -> None:
    model = build_tiny_pixel_model(seed=0)
    rewards = {"jpeg_compressibility": build_reward("jpeg_compressibility")}
    kwargs = dict(num_steps=2, guidance_scale=3.0)
    a = evaluate(model, ["a cat", "a dog"], [0, 1], rewards, batch_size=4, **kwargs)
    b = evaluate(model, ["a cat", "a dog"], [0, 1], rewards, batch_size=1, **kwargs)
    torch.testing.assert_close(a.images, b.images, rtol=1e-5, atol=1e-5)
    assert list(a.table["seed"]) == [0, 1, 0, 1] and "jpeg_compressibility/mean" in a.summary
    assert compare(a.table, b.table, "jpeg_compressibility")["win_rate"] == pytest.approx(0.5, abs=0.25)


def test_evaluation_accepts_seeds_per_prompt() -> None:
    model = build_tiny_pixel_model(seed=0)
    rewards = {"jpeg_compressibility": build_reward("jpeg_compressibility")}
    kwargs = dict(num_steps=2, guidance_scale=3.0)
    shared = evaluate(model, ["a cat", "a dog"], [0, 1, 5], rewards, **kwargs)
    own = evaluate(model, ["a cat", "a dog"], {"a cat": [0, 1], "a dog": [5]}, rewards, **kwargs)
    assert list(own.table["prompt"]) == ["a cat", "a cat", "a dog"] and list(own.table["seed"]) == [0, 1, 5]
    torch.testing.assert_close(own.images, shared.images[[0, 1, 5]], rtol=1e-5, atol=1e-5)  # same seed, same sample
    with pytest.raises(ValueError, match="a dog"):
        evaluate(model, ["a cat", "a dog"], {"a cat": [0]}, rewards, **kwargs)


def test_win_rate_closed_form() -> None:
    assert win_rate([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    with pytest.raises(ValueError, match="same pairs"):
        win_rate([1.0, 2.0], [1.0])


def test_paired_test_detects_a_consistent_gain_and_not_noise() -> None:
    from rlsd.evaluation import paired_test

    rng = np.random.default_rng(0)
    base = rng.normal(size=64)
    better = paired_test(base + 0.5 + 0.1 * rng.normal(size=64), base)
    assert better["p_value"] < 1e-6 and better["win_rate"] > 0.9
    noise = paired_test(base + rng.normal(size=64), base)
    assert noise["p_value"] > 0.05
    # a metric to minimise: lower values are the improvement
    assert paired_test(base - 0.5, base, higher_is_better=False)["p_value"] < 1e-6
    assert paired_test(base, base)["p_value"] == 1.0
    # SE of the mean paired difference: gains 1, 2, 3, 4 -> std(ddof=1) 1.2910 / sqrt(4)
    assert paired_test(base[:4] + np.arange(1, 5), base[:4])["change_se"] == pytest.approx(np.sqrt(5 / 3) / 2)
    assert paired_test(base[:1] + 1, base[:1])["change_se"] == 0.0
    with pytest.raises(ValueError, match="same pairs"):
        paired_test([1.0, 2.0], [1.0])


def test_parity_per_block_is_sp_of_each_block_and_rejects_mixed_blocks() -> None:
    from rlsd.shapes.evaluate import parity_per_block
    from rlsd.shapes.grammar import parse
    from rlsd.shapes.render import render_batch
    from rlsd.shapes.scene import sample_scene

    rng = np.random.default_rng(0)
    colours = ["red"] * 4 + ["red", "green", "blue", "yellow"]
    scenes = [sample_scene(parse(f"a {c} circle"), rng) for c in colours]
    images = torch.from_numpy(render_batch(scenes, rng))
    sp = parity_per_block(images, ["a circle"] * 8, block=4)
    np.testing.assert_allclose(sp, [0.75, 0.0], atol=1e-9)  # one colour: (1 - 1/4)^2 + 3/16; uniform: 0
    with pytest.raises(ValueError, match="spans two prompts"):
        parity_per_block(images, ["a circle"] * 2 + ["a square"] * 6, block=4)
    with pytest.raises(ValueError, match="divide"):
        parity_per_block(images, ["a circle"] * 8, block=3)


def test_train_vs_heldout_tool_pairs_a_model_with_itself_to_zero_change() -> None:
    """tools/train_vs_heldout.py: one row per split; the same model on the same seeds changes nothing."""
    import importlib.util

    path = Path(__file__).parents[1] / "tools" / "train_vs_heldout.py"
    spec = importlib.util.spec_from_file_location("train_vs_heldout", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    base = str(Path(__file__).parents[1] / "data" / "shapesworld_base")
    table = tool.train_vs_heldout(base, base, 2, [10_000, 10_001], num_steps=4, guidance_scale=2.0)
    assert table["split"].tolist() == ["train", "held-out"]
    assert (table["change"] == 0).all() and (table["change SE"] == 0).all()
    assert ((table["base"] >= 0) & (table["base"] <= 1)).all()
    with pytest.raises(ValueError, match=r"num_compositional must be in 0..66 \(tuning held-out"):
        tool.train_vs_heldout(base, base, 1000, [10_000], num_steps=4, guidance_scale=2.0)
