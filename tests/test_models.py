"""Model container, loading/export in the diffusers layout, tiny builders, word-level tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from helpers_tiny import tiny_pixel_model, tiny_sd

from rlsd.models import T2IModel, build_tiny_sd, export_model, load_model
from rlsd.sampling import sample_trajectories

PROMPTS = ["a red circle", "the blue square"]


def _unet_out(model: T2IModel, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, model.latent_channels, model.sample_size, model.sample_size, generator=gen)
    with torch.no_grad():
        return model.unet(x, torch.tensor(500), encoder_hidden_states=model.encode_prompts(PROMPTS)).sample


def test_tiny_sd_roundtrip_through_folder_is_exact(tmp_path: Path) -> None:
    memory, loaded = build_tiny_sd(seed=0), build_tiny_sd(tmp_path / "sd", seed=0)
    assert isinstance(loaded.scheduler, DDIMScheduler) and loaded.vae is not None
    assert (loaded.latent_channels, loaded.sample_size) == (4, 8)
    torch.testing.assert_close(loaded.encode_prompts(PROMPTS), memory.encode_prompts(PROMPTS), atol=0, rtol=0)
    torch.testing.assert_close(_unet_out(loaded), _unet_out(memory), atol=0, rtol=0)
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        images = loaded.decode(z)
        torch.testing.assert_close(images, memory.decode(z), atol=0, rtol=0)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(memory.scheduler.config)


def test_tiny_builders_are_deterministic_in_seed() -> None:
    a, b, c = build_tiny_sd(seed=0), build_tiny_sd(seed=0), build_tiny_sd(seed=1)
    torch.testing.assert_close(_unet_out(a), _unet_out(b), atol=0, rtol=0)
    assert not torch.allclose(_unet_out(a), _unet_out(c))


def test_export_loads_in_stable_diffusion_pipeline_and_matches_sampler(tmp_path: Path) -> None:
    model = tiny_sd(tmp_path, seed=0)
    folder = tmp_path / "exported"
    export_model(model, folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["requires_safety_checker"] is False and index["safety_checker"] == [None, None]
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_steps=4, guidance_scale=7.0, eta=1.0)
    out = pipe(PROMPTS, num_inference_steps=4, guidance_scale=7.0, eta=1.0, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    traj = sample_trajectories(model, PROMPTS, generator=torch.Generator().manual_seed(0), **kw)
    assert out.shape == traj.images.shape == (2, 3, 16, 16)
    torch.testing.assert_close(traj.images, out.float(), atol=1e-4, rtol=1e-4)  # same noise => same images


def test_pixel_model_roundtrip_and_identity_codec(tmp_path: Path) -> None:
    memory, loaded = tiny_pixel_model(seed=3), tiny_pixel_model(tmp_path, seed=3)
    assert loaded.vae is None and not (tmp_path / "tiny_pixel" / "vae").exists()
    assert (loaded.latent_channels, loaded.sample_size) == (3, 16)
    torch.testing.assert_close(_unet_out(loaded), _unet_out(memory), atol=0, rtol=0)
    images = torch.rand(2, 3, 16, 16)
    x = loaded.encode_images(images)
    torch.testing.assert_close(x, images * 2 - 1)
    torch.testing.assert_close(loaded.decode(x), images)


def test_vae_encode_images_shape_and_generator() -> None:
    model = build_tiny_sd(seed=0)
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        a = model.encode_images(images, generator=torch.Generator().manual_seed(0))
        b = model.encode_images(images, generator=torch.Generator().manual_seed(0))
        c = model.encode_images(images, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 4, 8, 8)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


def test_missing_folder_subfolder_and_config_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist.*huggingface-cli download"):
        load_model(tmp_path / "nowhere")
    tiny_pixel_model(tmp_path)
    folder = tmp_path / "tiny_pixel"
    (folder / "unet" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tiny_pixel has no unet/config.json.*text_encoder/ tokenizer/"):
        load_model(folder)
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(FileNotFoundError, match=r"tiny_pixel.*has no"):
        load_model(folder)


def test_pndm_scheduler_config_loads_as_ddim(tmp_path: Path) -> None:
    tiny_pixel_model(tmp_path)
    cfg_path = tmp_path / "tiny_pixel" / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"_class_name": "PNDMScheduler", "skip_prk_steps": True})
    cfg_path.write_text(json.dumps(cfg))
    model = load_model(tmp_path / "tiny_pixel")
    assert isinstance(model.scheduler, DDIMScheduler)
    assert model.scheduler.config.beta_schedule == "scaled_linear" and model.scheduler.config.steps_offset == 1


def test_word_level_tokenizer_folder_loads(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "a", "red", "blue", "circle", "square", "the"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        model_max_length=6)
    tiny_pixel_model(tmp_path)
    folder = tmp_path / "tiny_pixel"
    shutil.rmtree(folder / "tokenizer")
    tokenizer.save_pretrained(folder / "tokenizer")
    model = load_model(folder)
    ids = model.tokenizer(["a red zebra"], padding="max_length", max_length=6).input_ids[0]
    assert ids == [2, 3, 1, 0, 0, 0]
    assert model.encode_prompts(PROMPTS).shape == (2, 6, 32)


def test_load_model_dtype_and_export_guard(tmp_path: Path) -> None:
    tiny_pixel_model(tmp_path)
    model = load_model(tmp_path / "tiny_pixel", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.text_encoder.dtype == torch.bfloat16
    other = tmp_path / "not_a_model"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not_a_model"):
        export_model(model, other)
    assert (other / "notes.txt").read_text() == "keep me"
    export_model(model, tmp_path / "tiny_pixel")  # replacing a model folder is allowed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp/backup dirs left behind


def test_export_of_bf16_frozen_parts_generates(tmp_path: Path) -> None:
    """model.dtype bfloat16 keeps the UNet float32 and the text encoder/VAE bf16; the export must still run."""
    model = tiny_sd()
    model.text_encoder.to(dtype=torch.bfloat16)
    model.vae.to(dtype=torch.bfloat16)
    te_before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    export_model(model, tmp_path / "export")
    assert model.text_encoder.dtype == torch.bfloat16 and model.vae.dtype == torch.bfloat16  # restored
    assert all(torch.equal(te_before[k], v) for k, v in model.text_encoder.state_dict().items())
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "export", safety_checker=None)
    dtypes = {pipe.unet.dtype, pipe.text_encoder.dtype, pipe.vae.dtype}
    assert dtypes == {torch.float32}, dtypes
    out = pipe(["a red circle"], num_inference_steps=2, guidance_scale=3.0, output_type="pt",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 3, 16, 16) and torch.isfinite(out.images).all()
