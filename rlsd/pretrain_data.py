"""Image-caption data for the pretraining loss L_pre (paper Alg. 1) and the denoising loss itself.

Datasets (``PretrainConfig.dataset`` spec, built by :func:`build_pretrain_source` as resumable batch streams):

=============  ==========================================================================================
``folder``     ``{name: folder, path: DIR}``; DIR holds images plus ``captions.jsonl`` (lines
               ``{"file": "a.png", "caption": "..."}``) or ``metadata.csv`` (columns ``file_name,text``
               or ``file,caption``)
``parquet``    ``{name: parquet, path: FILE, image_column: image, caption_column: caption}``; the image
               column holds encoded bytes (or ``{"bytes": ...}`` dicts as written by HF datasets)
``shapesworld`` ``{name: shapesworld, **kwargs}``: ``rlsd.shapes.dataset.ShapesPretrainData(**kwargs)``
=============  ==========================================================================================

Map-style datasets return ``(image (3, H, W) float in [0, 1], caption)`` from ``__getitem__``; every
stream returns ``(images (n, 3, H, W), captions)`` from ``next_batch(n)``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor


class ImageCaptionDataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[Tensor, str]: ...


def _load_image(source: Any, size: int) -> Tensor:
    """Path or bytes -> ``(3, size, size)`` float tensor in [0, 1] (RGB, bicubic resize)."""
    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class FolderDataset:
    """Images in a folder with ``captions.jsonl`` or ``metadata.csv``."""

    def __init__(self, path: str | Path, size: int):
        self.root, self.size = Path(path), size
        if (self.root / "captions.jsonl").is_file():
            rows = [json.loads(line) for line in (self.root / "captions.jsonl").read_text().splitlines() if line]
        elif (self.root / "metadata.csv").is_file():
            with open(self.root / "metadata.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            raise FileNotFoundError(f"pretrain.dataset.path {self.root} has no captions.jsonl or metadata.csv; add one "
                                    "(lines {\"file\": \"a.png\", \"caption\": \"...\"}).")
        self.items = [(r.get("file") or r.get("file_name"), r.get("caption") or r.get("text") or "") for r in rows]
        if not self.items or any(f is None for f, _ in self.items):
            raise ValueError(f"caption index in {self.root} is empty or lacks a file/file_name column; fix the index.")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        file, caption = self.items[i]
        return _load_image(self.root / file, self.size), caption


class ParquetDataset:
    """A parquet file with encoded image bytes and captions (loaded fully into memory)."""

    def __init__(self, path: str | Path, size: int, image_column: str = "image", caption_column: str = "caption"):
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrain.dataset.path {path} does not exist; point it at a parquet file.")
        table = pq.read_table(path)
        for col in (image_column, caption_column):
            if col not in table.column_names:
                raise ValueError(f"parquet {path} has no column {col!r} (has {table.column_names}); set "
                                 "pretrain.dataset.image_column / caption_column.")
        self.images = table.column(image_column).to_pylist()
        self.captions = [str(c) for c in table.column(caption_column).to_pylist()]
        self.size = size

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        data = self.images[i]
        data = data["bytes"] if isinstance(data, dict) else data
        return _load_image(data, self.size), self.captions[i]


class IndexedStream:
    """Resumable stream of random batches (with replacement) over a map-style dataset.

    Batch ``k`` is drawn from a generator seeded by ``(seed, k)``, so ``state_dict()`` = ``{"seed",
    "batch_index"}`` fully determines the stream (same interface as ``ShapesPretrainData``).
    """

    def __init__(self, dataset: ImageCaptionDataset, seed: int = 0):
        self.dataset, self.seed, self.batch_index = dataset, int(seed), 0

    def next_batch(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, list[str]]:
        """Images ``(n, 3, H, W)`` in [0, 1] and ``n`` captions (``generator`` is unused)."""
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.batch_index)
        self.batch_index += 1
        idx = torch.randint(len(self.dataset), (n,), generator=gen).tolist()
        items = [self.dataset[i] for i in idx]
        return torch.stack([im for im, _ in items]), [c for _, c in items]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "batch_index": self.batch_index}

    def load_state_dict(self, state: dict) -> None:
        self.batch_index = int(state["batch_index"])


def build_pretrain_source(spec: dict, image_size: int, seed: int = 0) -> Any:
    """Resumable L_pre batch stream (``next_batch(n) -> (images, captions)``, ``state_dict``) from a spec.

    ``image_size`` is the model's pixel resolution; ``seed`` is used unless the spec sets its own.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "folder":
        return IndexedStream(FolderDataset(spec["path"], image_size), seed=spec.get("seed", seed))
    if name == "parquet":
        stream_seed = spec.pop("seed", seed)
        return IndexedStream(ParquetDataset(spec.pop("path"), image_size, **spec), seed=stream_seed)
    if name == "shapesworld":
        from rlsd.shapes.dataset import ShapesPretrainData

        spec.setdefault("seed", seed)
        spec.setdefault("resolution", image_size)
        return ShapesPretrainData(**spec)
    raise ValueError(f"pretrain.dataset.name={name!r} is unknown; use folder, parquet or shapesworld.")


def model_image_size(model: Any) -> int:
    """Pixel resolution H (= W) of a ``T2IModel``: sample_size times the VAE downsampling factor."""
    size = model.sample_size if isinstance(model.sample_size, int) else model.sample_size[0]
    if model.vae is None:
        return int(size)
    return int(size) * 2 ** (len(model.vae.config.block_out_channels) - 1)


def denoising_target(scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """Regression target of the denoiser for ``scheduler.config.prediction_type``: eps, or
    v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0. Shapes ``(B, ...)`` like ``x0``; other types raise."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    raise ValueError(f"scheduler prediction_type {kind!r} is unsupported for denoising training; use epsilon or v_prediction.")


def denoising_loss(
    model: Any,
    images: Tensor,
    captions: list[str],
    generator: torch.Generator | None = None,
    *,
    noise: Tensor | None = None,
    timesteps: Tensor | None = None,
    unet: Any | None = None,
) -> Tensor:
    """Diffusion pretraining loss ``E ||target - unet(x_t, t, c)||^2`` (L_pre), with grad through the UNet.

    Args:
        model: ``T2IModel`` (encodes images and captions, holds the scheduler).
        images: ``(B, 3, H, W)`` in [0, 1]; captions: ``B`` strings.
        generator: draws timesteps ~ U{0..T_train-1} and noise ~ N(0, I) when they are not given.
        noise: ``(B, C, h, w)`` optional; timesteps: ``(B,)`` long optional (pass both to make the loss
            independent of how a global batch is split across ranks).
        unet: the network to train (e.g. the DDP-wrapped UNet); defaults to ``model.unet``.

    Returns:
        Scalar float32 loss; the target is epsilon or v (``scheduler.config.prediction_type``).
    """
    scheduler = model.scheduler
    with torch.no_grad():
        latents = model.encode_images(images, generator=generator).float()
        embeds = model.encode_prompts(captions)
    if timesteps is None:
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator)
    noise, timesteps = noise.to(latents.device, latents.dtype), timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = denoising_target(scheduler, latents, noise, timesteps)
    unet = model.unet if unet is None else unet
    unet_dtype = next(unet.parameters()).dtype
    pred = unet(noisy.to(unet_dtype), timesteps, encoder_hidden_states=embeds.to(unet_dtype)).sample
    return torch.nn.functional.mse_loss(pred.float(), target.float())
