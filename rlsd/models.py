"""Text-to-image model container, local loading/export in the diffusers layout, tiny random models.

A model folder has the diffusers layout ``unet/ scheduler/ text_encoder/ tokenizer/ [vae/]``; without
``vae/`` the UNet works in pixel space (values in [-1, 1]). Nothing here touches the model hub: every
``from_pretrained`` call uses ``local_files_only=True`` on a local path.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

_LAYOUT = "unet/ scheduler/ text_encoder/ tokenizer/ [vae/]"
_REQUIRED = {"unet": "config.json", "scheduler": "scheduler_config.json", "text_encoder": "config.json",
             "tokenizer": None}


@dataclass
class T2IModel:
    """A text-conditioned diffusion model: UNet + DDIM scheduler + text encoder + tokenizer (+ optional VAE).

    ``vae is None`` means pixel space: the UNet's sample is the image in [-1, 1].
    """

    unet: Any  # diffusers.UNet2DConditionModel
    scheduler: Any  # diffusers.DDIMScheduler
    text_encoder: Any  # transformers.PreTrainedModel returning last_hidden_state first
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    vae: Any | None = None  # diffusers.AutoencoderKL or None

    @property
    def latent_channels(self) -> int:
        """Channels C of the UNet sample."""
        return int(self.unet.config.in_channels)

    @property
    def sample_size(self) -> int:
        """Spatial size h (= w) of the UNet sample."""
        return self.unet.config.sample_size

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "T2IModel":
        """Move (and optionally cast) all networks in place; the scheduler stays on CPU. Returns self."""
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for net in (self.unet, self.text_encoder, self.vae):
            if net is not None and kwargs:
                net.to(**kwargs)
        return self

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Tensor:
        """Token ids padded/truncated to ``tokenizer.model_max_length`` -> embeddings ``(B, L, D)``."""
        max_length = self.tokenizer.model_max_length
        if max_length is None or max_length > 100_000:
            raise ValueError("tokenizer.model_max_length is unset; save the tokenizer with model_max_length=<L>.")
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True,
                                return_tensors="pt")
        ids = tokens.input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0].to(self.device)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents ``(B, C, h, w)`` -> images ``(B, 3, H, W)`` in [0, 1] (pixel space: identity map)."""
        if self.vae is None:
            images = latents
        else:
            vae_cfg = self.vae.config
            z = latents.to(self.vae.dtype) / vae_cfg.scaling_factor + (getattr(vae_cfg, "shift_factor", None) or 0.0)
            images = self.vae.decode(z).sample
        return (images / 2 + 0.5).clamp(0, 1)

    def encode_images(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> scaled latents ``(B, C, h, w)`` (VAE posterior sample)."""
        x = images.to(self.device, self.dtype) * 2 - 1
        if self.vae is None:
            return x
        vae_cfg = self.vae.config
        z = self.vae.encode(x.to(self.vae.dtype)).latent_dist.sample(generator=generator)
        return ((z - (getattr(vae_cfg, "shift_factor", None) or 0.0)) * vae_cfg.scaling_factor).to(self.dtype)


def _check_folder(folder: Path) -> bool:
    """Raise FileNotFoundError unless ``folder`` has the model layout; return whether it has a VAE."""
    hint = (f"expected the diffusers layout {_LAYOUT}; SD weights must be downloaded by you and put there "
            "(e.g. `huggingface-cli download stabilityai/stable-diffusion-2-base --local-dir <folder>` "
            "on a machine with network).")
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist; {hint}")
    for sub, cfg in _REQUIRED.items():
        path = folder / sub if cfg is None else folder / sub / cfg
        if not path.exists():
            raise FileNotFoundError(f"model folder {folder} has no {path.relative_to(folder)}; {hint}")
    has_vae = (folder / "vae").is_dir()
    if has_vae and not (folder / "vae" / "config.json").exists():
        raise FileNotFoundError(f"model folder {folder} has no vae/config.json; {hint}")
    return has_vae


def _load_text_encoder(path: Path) -> Any:
    """Load the class named in ``config.json`` ``architectures`` (CLIPTextModel for SD), else AutoModel."""
    import transformers

    arch = (json.loads((path / "config.json").read_text()).get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    cls = cls if cls is not None else transformers.AutoModel
    return cls.from_pretrained(path, local_files_only=True)


def load_model(folder: str | Path, *, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> T2IModel:
    """Load an SD 1.x/2.x diffusers folder or a pixel-space folder (no ``vae/``) into a ``T2IModel``.

    The scheduler is always a ``DDIMScheduler`` built from ``scheduler/`` (PNDM configs work too). Text
    encoder and VAE are frozen (``requires_grad=False``); all networks are put in eval mode.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer

    folder = Path(folder)
    has_vae = _check_folder(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    text_encoder = _load_text_encoder(folder / "text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True) if has_vae else None
    for net in (text_encoder, vae):
        if net is not None:
            net.requires_grad_(False)
    for net in (unet, text_encoder, vae):
        if net is not None:
            net.eval()
    return T2IModel(unet, scheduler, text_encoder, tokenizer, vae).to(device=device, dtype=dtype)


def _model_index(model: T2IModel) -> dict:
    """``model_index.json`` content for ``StableDiffusionPipeline`` (no safety checker)."""
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(model.scheduler).__name__],
        "text_encoder": ["transformers", type(model.text_encoder).__name__],
        "tokenizer": ["transformers", type(model.tokenizer).__name__],
        "unet": ["diffusers", type(model.unet).__name__],
        "vae": ["diffusers", type(model.vae).__name__],
    }


def export_model(model: T2IModel, folder: str | Path) -> None:
    """Write ``model`` atomically (temp dir + rename) in the diffusers layout.

    With a VAE a ``model_index.json`` is added, so ``StableDiffusionPipeline.from_pretrained(folder)``
    loads it. An existing ``folder`` is replaced only if it is empty or itself a model folder (has unet/).
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not (folder / "unet").is_dir():
        raise FileExistsError(f"export folder {folder} exists and is not a model folder; choose an empty path.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        with _one_dtype(model):
            _write_parts(model, tmp)
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _one_dtype(model: T2IModel) -> Iterator[None]:
    """Cast the text encoder and VAE to the UNet's dtype for the write, then back.

    A pipeline folder must hold one dtype: ``StableDiffusionPipeline`` loads each part in its saved dtype,
    and a float32 UNet fed bfloat16 text embeddings fails on its first call. bf16 -> fp32 -> bf16 is exact,
    so the round trip leaves the frozen parts unchanged.
    """
    target = model.unet.dtype
    parts = [m for m in (model.text_encoder, model.vae) if m is not None and m.dtype != target]
    saved = [m.dtype for m in parts]
    for m in parts:
        m.to(dtype=target)
    try:
        yield
    finally:
        for m, dtype in zip(parts, saved):
            m.to(dtype=dtype)


def _write_parts(model: T2IModel, tmp: Path) -> None:
    model.unet.save_pretrained(tmp / "unet")
    model.scheduler.save_pretrained(tmp / "scheduler")
    model.text_encoder.save_pretrained(tmp / "text_encoder")
    model.tokenizer.save_pretrained(tmp / "tokenizer")
    if model.vae is not None:
        model.vae.save_pretrained(tmp / "vae")
        (tmp / "model_index.json").write_text(json.dumps(_model_index(model), indent=2))


# ----------------------------------------------------------------------------- tiny random models

TINY_TEXT_LENGTH = 16  # max tokens (with <|startoftext|>/<|endoftext|>) of every tiny CLIP tokenizer
TINY_SD_MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>"), ("r", "e"), ("e", "r</w>"),
                  ("c", "i"), ("s", "q"), ("u", "a"), ("e", "d</w>"), ("o", "r</w>")]


def _byte_unicode_chars() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (printable bytes map to themselves)."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tiny_clip_tokenizer(folder: str | Path, max_length: int = TINY_TEXT_LENGTH,
                              merges: list[tuple[str, str]] = TINY_SD_MERGES) -> int:
    """Write vocab.json/merges.txt/tokenizer_config.json of a tiny byte-level BPE CLIP tokenizer; return the vocab size.

    Vocab ids: 256 byte chars, the same 256 with ``</w>``, one token per merge, then ``<|startoftext|>``
    (vocab size - 2) and ``<|endoftext|>`` (vocab size - 1, also pad and unk). Used by ``build_tiny_sd`` and
    the tiny reward-model folders of :mod:`rlsd.rewards.tiny` (which pass their own ``merges``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_unicode_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    return len(tokens)


def _tiny_text_parts() -> tuple[Any, Any]:
    """Tiny CLIP text encoder (hidden 32, 2 layers, vocab 1000) and its written-here tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_tokenizer(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
    config = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=TINY_TEXT_LENGTH, projection_dim=32,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config).eval(), tokenizer


def sd_ddim_scheduler(prediction_type: str = "epsilon") -> Any:
    """DDIMScheduler with Stable Diffusion's training betas (scaled_linear 0.00085..0.012, 1000 steps)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)


def _tiny_unet(channels: int, sample_size: int) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=2,
        norm_num_groups=32).eval()


def _finish_tiny(model: T2IModel, folder: str | Path | None) -> T2IModel:
    model.text_encoder.requires_grad_(False)
    if model.vae is not None:
        model.vae.requires_grad_(False).eval()
    if folder is None:
        return model
    export_model(model, folder)
    return load_model(folder)


def build_tiny_sd(folder: str | Path | None = None, *, seed: int = 0) -> T2IModel:
    """Tiny random Stable Diffusion (4x8x8 latents, 3x16x16 images), deterministic for ``seed``.

    If ``folder`` is given the model is exported there and reloaded through ``load_model``.
    """
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _tiny_unet(channels=4, sample_size=8)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64),
                            layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=16)
        text_encoder, tokenizer = _tiny_text_parts()
    model = T2IModel(unet.eval(), sd_ddim_scheduler(), text_encoder, tokenizer, vae)
    return _finish_tiny(model, folder)


def build_tiny_sd_folder(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SD folder (see ``build_tiny_sd``) and return its path."""
    build_tiny_sd(folder, seed=seed)
    return Path(folder)


def build_tiny_pixel_model(folder: str | Path | None = None, *, seed: int = 0, sample_size: int = 16) -> T2IModel:
    """Tiny random pixel-space model (3 x sample_size x sample_size, no VAE), deterministic for ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _tiny_unet(channels=3, sample_size=sample_size)
        text_encoder, tokenizer = _tiny_text_parts()
    model = T2IModel(unet, sd_ddim_scheduler(), text_encoder, tokenizer, None)
    return _finish_tiny(model, folder)
