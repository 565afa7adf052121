"""Shipped ShapesWorld base model (data/shapesworld_base) and the base-training CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlsd.models import load_model
from rlsd.sampling import sample_trajectories
from rlsd.shapes.base_training import build_components, denoising_loss, main, sha256_file

BASE_DIR = Path(__file__).resolve().parents[1] / "data" / "shapesworld_base"


def test_shipped_base_model_matches_manifest_loads_and_samples():
    manifest = json.loads((BASE_DIR / "MANIFEST.json").read_text())
    weights = [f for f in manifest["sha256"] if f.endswith(".safetensors")]
    assert {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"} <= set(weights)
    for name, digest in manifest["sha256"].items():
        assert sha256_file(BASE_DIR / name) == digest, name
    assert sum((BASE_DIR / f).stat().st_size for f in weights) <= 20 * 2**20
    assert not (BASE_DIR / "vae").exists()
    model = load_model(BASE_DIR)
    assert model.vae is None and model.sample_size == 32 and model.latent_channels == 3
    traj = sample_trajectories(model, ["a red circle", "a shape"], num_steps=4,
                               guidance_scale=manifest["guidance_scale"], generator=torch.Generator().manual_seed(0))
    assert traj.images.shape == (2, 3, 32, 32) and traj.log_probs.shape == (2, 4)
    assert 0 <= traj.images.min() and traj.images.max() <= 1 and torch.isfinite(traj.log_probs).all()


def test_shipped_base_model_draws_every_shape_on_a_clean_canvas():
    """Sample quality the RL tasks build on, at the demo's sampling settings (20 DDIM steps, eta 1).

    An earlier epsilon-prediction base model drew squares as round blobs (detection 0.01 on
    "a <colour> square") and most samples on a noisy, tinted canvas (gold 0.46); the v-prediction model
    measured circle/square/triangle 0.98/0.59/0.99 and gold 0.91 on 12 seeds of its own.
    """
    from rlsd.evaluation import evaluate
    from rlsd.rewards import build_reward

    manifest = json.loads((BASE_DIR / "MANIFEST.json").read_text())
    prompts = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "triangle")]
    result = evaluate(load_model(BASE_DIR), prompts, list(range(4)),
                      {"det": build_reward("shapes_detection"), "gold": build_reward("shapes_gold")},
                      num_steps=20, guidance_scale=manifest["guidance_scale"], batch_size=48)
    table = result.table.assign(shape=result.table["prompt"].str.split().str[-1])
    per_shape = table.groupby("shape")["det"].mean()
    assert (per_shape > 0.3).all(), per_shape.to_dict()
    assert table["gold"].mean() > 0.7, table["gold"].mean()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoising_loss_is_zero_for_the_exact_predictor(prediction_type):
    _, _, scheduler = build_components(20, seed=0, prediction_type=prediction_type)
    abar = scheduler.alphas_cumprod
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1

    def oracle(noisy, t, encoder_hidden_states):
        a = abar[t].view(-1, 1, 1, 1)
        eps = (noisy - a.sqrt() * x0) / (1 - a).sqrt()
        return SimpleNamespace(sample=eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0)

    loss = denoising_loss(oracle, scheduler, x0, torch.zeros(4, 12, 64), torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8
    noisy_loss = denoising_loss(lambda n, t, encoder_hidden_states: SimpleNamespace(sample=torch.zeros_like(n)),
                                scheduler, x0, torch.zeros(4, 12, 64), torch.Generator().manual_seed(0))
    assert 0.2 < noisy_loss.item() < 1.5  # E[target^2]: 1 for eps, abar + (1 - abar) E[x0^2] for v


def test_base_training_rejects_an_unknown_prediction_type_and_a_mismatched_init(tmp_path):
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        build_components(20, seed=0, prediction_type="sample")
    main(["--out", str(tmp_path / "eps"), "--steps", "1", "--batch-size", "2", "--prediction-type", "epsilon"])
    with pytest.raises(ValueError, match="predicts 'epsilon' but prediction_type is 'v_prediction'"):
        main(["--out", str(tmp_path / "v"), "--steps", "1", "--batch-size", "2", "--init-from", str(tmp_path / "eps")])


def test_base_training_cli_writes_a_loadable_folder_with_manifest(tmp_path):
    out = tmp_path / "base"
    main(["--out", str(out), "--steps", "2", "--batch-size", "4", "--log-every", "1", "--seed", "3"])
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["seed"] == 3 and manifest["steps_done"] == 2 and len(manifest["loss_curve"]) == 2
    assert "--steps 2" in manifest["command"] and manifest["data_statistics"]["examples"] == 8
    assert all(sha256_file(out / f) == h for f, h in manifest["sha256"].items())
    assert not (tmp_path / "base.tmp").exists()
    model = load_model(out)
    assert model.encode_prompts(["a blue square left of a red circle"]).shape == (1, 12, 64)
