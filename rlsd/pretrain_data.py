"""Image-caption data for the pretraining loss L_pre (paper Alg. 1) and the denoising loss itself.

Datasets (``PretrainConfig.dataset`` spec, built by :func:`build_pretrain_source` as resumable batch streams):

=============  ==========================================================================================
``folder``     ``{name: folder, path: DIR}``; DIR holds images plus ``captions.jsonl`` (lines
               ``{"file": "a.png", "caption": "..."}``) or ``metadata.csv`` (columns ``file_name,text``
               or ``file,caption``); random batches with replacement (:class:`IndexedStream`)
``parquet``    ``{name: parquet, path: FILE or DIR of *.parquet, image_column: image, caption_column: caption}``;
               the image column holds encoded bytes (or ``{"bytes": ...}`` dicts as written by HF datasets);
               read one row group at a time, each row once per epoch (:class:`rlsd.pretrain_parquet.ParquetStream`)
``shapesworld`` ``{name: shapesworld, **kwargs}``: ``rlsd.shapes.dataset.ShapesPretrainData(**kwargs)``
=============  ==========================================================================================

Every stream has ``next_batch(n, *, rank=0, world_size=1) -> (images (n // world_size, 3, H, W), captions)``:
rows ``local_slice(n, rank, world_size)`` of the global batch of ``n``, so the ranks' shares together are
exactly the batch one process would draw, and each rank decodes only its own share. The stream position
advances by the global ``n`` on every rank and is the same everywhere (``state_dict`` / ``load_state_dict``).
Images are centre-cropped to a square, then resized (bicubic) to the model's resolution.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from rlsd.distributed import local_slice

__all__ = ["FolderDataset", "IndexedStream", "WholeBatchShare", "build_pretrain_source", "load_image", "share",
           "model_image_size", "denoising_target", "denoising_loss"]


class ImageCaptionDataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[Tensor, str]: ...


def share(n: int, rank: int, world_size: int) -> slice:
    """This rank's rows of a global L_pre batch of ``n`` (``n`` must divide by ``world_size``)."""
    return local_slice(n, rank, world_size, name="pretrain.batch_size")


def load_image(source: Any, size: int) -> Tensor:
    """Path or encoded bytes -> ``(3, size, size)`` float tensor in [0, 1]: RGB, centre square crop (side =
    the shorter edge, offset floor((long - short) / 2)), then bicubic resize."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as raw:
        img = raw.convert("RGB")
    w, h = img.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class FolderDataset:
    """Images in a folder with ``captions.jsonl`` or ``metadata.csv`` (only the index is held in memory)."""

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
        return load_image(self.root / file, self.size), caption


class IndexedStream:
    """Resumable stream of random batches (with replacement) over a map-style dataset.

    The ``n`` indices of batch ``k`` are drawn from a generator seeded by ``(seed, k)`` on every rank; a rank
    loads only the items of its share. ``state_dict()`` = ``{"seed", "batch_index"}`` fully determines the
    stream (same interface as ``ShapesPretrainData``).
    """

    def __init__(self, dataset: ImageCaptionDataset, seed: int = 0):
        self.dataset, self.seed, self.batch_index = dataset, int(seed), 0

    def next_batch(self, n: int, *, rank: int = 0, world_size: int = 1) -> tuple[Tensor, list[str]]:
        """This rank's ``n // world_size`` images ``(m, 3, H, W)`` in [0, 1] and captions of global batch ``n``."""
        local = share(n, rank, world_size)
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.batch_index)
        idx = torch.randint(len(self.dataset), (n,), generator=gen).tolist()[local]
        items = [self.dataset[i] for i in idx]
        self.batch_index += 1
        return torch.stack([im for im, _ in items]), [c for _, c in items]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "batch_index": self.batch_index}

    def load_state_dict(self, state: dict) -> None:
        self.batch_index = int(state["batch_index"])


class WholeBatchShare:
    """A synthetic stream without per-sample I/O (ShapesWorld renders): draws the whole global batch, as one
    process would, and keeps this rank's rows; state is the wrapped stream's."""

    def __init__(self, source: Any):
        self.source = source

    def next_batch(self, n: int, *, rank: int = 0, world_size: int = 1) -> tuple[Tensor, list[str]]:
        """Rows ``share(n, rank, world_size)`` of ``source.next_batch(n)``."""
        local = share(n, rank, world_size)
        images, captions = self.source.next_batch(n)
        return images[local], captions[local]

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)


def build_pretrain_source(spec: dict, image_size: int, seed: int = 0) -> Any:
    """Resumable L_pre batch stream (``next_batch(n, rank=, world_size=)``, ``state_dict``) from a spec.

    ``image_size`` is the model's pixel resolution; ``seed`` is used unless the spec sets its own.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "folder":
        return IndexedStream(FolderDataset(spec["path"], image_size), seed=spec.get("seed", seed))
    if name == "parquet":
        from rlsd.pretrain_parquet import ParquetStream

        spec.setdefault("seed", seed)
        return ParquetStream(spec.pop("path"), image_size, **spec)
    if name == "shapesworld":
        from rlsd.shapes.dataset import ShapesPretrainData

        spec.setdefault("seed", seed)
        spec.setdefault("resolution", image_size)
        return WholeBatchShare(ShapesPretrainData(**spec))
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
