"""Helpers for notebooks/01_construct_rewards.ipynb: example images, reward tables, parity and
compositional demos. Every function is deterministic given its arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlsd.rewards.imaging import resize_center_crop

__all__ = ["quiet", "PHOTOS", "TONE_TINTS", "example_images", "image_grid_figure", "jpeg_table", "reward_folders",
           "model_reward_table", "parity_groups", "parity_table", "bucket_bar_figure", "compositional_table"]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# RGB multipliers applied to the astronaut photo; with the Haar face + ITA pipeline they land in
# skin-tone buckets 0, 1, 2, 3 (a crude stand-in for generated portraits; demo only)
TONE_TINTS = ((1.0, 1.0, 1.0), (0.95, 0.9, 0.82), (0.9, 0.8, 0.7), (0.7, 0.52, 0.36))


def quiet() -> None:
    """Silence progress bars, info logs and the tqdm/ipywidgets warning of transformers in notebook outputs."""
    import os
    import warnings

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    warnings.filterwarnings("ignore", message="IProgress not found")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _to_tensor(array: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 255


def example_images(size: int = 128, seed: int = 0) -> tuple[Tensor, list[str]]:
    """scikit-image photographs plus simple renders (flat grey, gradient, noise), (N, 3, size, size)."""
    from skimage import data

    tensors = [resize_center_crop(_to_tensor(getattr(data, name)()), size) for name in PHOTOS]
    ramp = torch.linspace(0, 1, size)
    renders = {"flat grey": torch.full((1, 3, size, size), 0.5),
               "gradient": torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size),
                                        torch.full((size, size), 0.3)])[None],
               "noise": torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))}
    return torch.cat(tensors + list(renders.values())), list(PHOTOS) + list(renders)


def image_grid_figure(images: Tensor, titles: list[str], ncols: int = 7) -> Any:
    """Matplotlib figure showing (N, 3, H, W) images with titles."""
    import matplotlib.pyplot as plt

    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.8 * ncols, 2.0 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def jpeg_table(images: Tensor, names: list[str]) -> Any:
    """DataFrame: JPEG q95 size (kB) and both JPEG rewards per image."""
    import pandas as pd

    from rlsd.rewards import build_reward

    meta = [{}] * len(names)
    comp, info = build_reward("jpeg_compressibility")(images, names, meta)
    incomp, _ = build_reward("jpeg_incompressibility")(images, names, meta)
    return pd.DataFrame({"image": names, "jpeg_kb": info["jpeg_kb"].numpy(), "jpeg_compressibility": comp.numpy(),
                         "jpeg_incompressibility": incomp.numpy()}).round(3)


def reward_folders(work_dir: str | Path, *, imagereward_dir: str | None = None, clip_dir: str | None = None,
                   aesthetic_head: str | None = None, seed: int = 0) -> dict[str, dict[str, str]]:
    """Model folders per reward: the given real ones, else tiny random ones written under ``work_dir``."""
    from rlsd.rewards.imagereward_tiny import build_tiny_imagereward_folder
    from rlsd.rewards.tiny import build_tiny_aesthetic_head, build_tiny_clip_folder

    work = Path(work_dir)
    tiny = "tiny random weights (scores are meaningless)"
    clip = clip_dir or str(build_tiny_clip_folder(work / "tiny_clip", seed=seed))
    if aesthetic_head is None and clip_dir is not None:
        raise ValueError("clip_dir is set but aesthetic_head is not; give the LAION head .pth matching that CLIP")
    return {
        "imagereward": {"model_dir": imagereward_dir or str(build_tiny_imagereward_folder(work / "tiny_imagereward", seed=seed)),
                        "weights": "official" if imagereward_dir else tiny},
        "pickscore": {"model_dir": clip, "weights": "official" if clip_dir else tiny},
        "clipscore": {"model_dir": clip, "weights": "official" if clip_dir else tiny},
        "aesthetic": {"clip_dir": clip, "head_path": aesthetic_head or str(build_tiny_aesthetic_head(work / "tiny_aesthetic.pth", seed=seed)),
                      "weights": "official" if aesthetic_head else tiny},
    }


def model_reward_table(folders: dict[str, dict[str, str]], images: Tensor, names: list[str], prompts: list[str]) -> Any:
    """DataFrame (image x model-based reward) of scores for ``prompts[i]`` paired with ``images[i]``."""
    import pandas as pd

    from rlsd.rewards import build_reward

    table = {"image": names, "prompt": prompts}
    for name, spec in folders.items():
        kwargs = {k: v for k, v in spec.items() if k != "weights"}
        table[name], _ = build_reward({"name": name, **kwargs})(images, prompts, [{}] * len(names))
        table[name] = table[name].numpy()
    return pd.DataFrame(table).round(3)


def parity_groups(size: int = 256) -> tuple[Tensor, list[str], list[dict]]:
    """A balanced group (one face per skin-tone bucket) and a biased one (all bucket 3): 8 images."""
    from skimage import data

    crop = data.astronaut()[0:256, 100:356].astype(np.float32)
    tinted = [_to_tensor((crop * np.array(t)).clip(0, 255).astype(np.uint8)) for t in TONE_TINTS]
    images = torch.cat(tinted + [tinted[-1]] * 4)
    images = resize_center_crop(images, size) if size != 256 else images
    prompts = ["a portrait of an astronaut"] * 8
    return images, prompts, [{"group": "balanced"}] * 4 + [{"group": "biased"}] * 4


def parity_table(images: Tensor, prompts: list[str], metadata: list[dict]) -> Any:
    """DataFrame per image: group, faces, bucket, the group's SP and reward (-SP)."""
    import pandas as pd

    from rlsd.rewards import build_reward

    rewards, info = build_reward("skin_tone_parity")(images, prompts, metadata)
    return pd.DataFrame({"group": [m["group"] for m in metadata], "num_faces": info["num_faces"].int().numpy(),
                         "bucket": info["bucket"].int().numpy(), "statistical_parity": info["statistical_parity"].numpy(),
                         "reward": rewards.numpy()}).round(4)


def bucket_bar_figure(table: Any) -> Any:
    """Bar plot of bucket proportions p̂_a per group (dashed line: the fair 1/|A|)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from rlsd.rewards.fairness import NUM_BUCKETS

    rows = []
    for group, part in table[table["bucket"] >= 0].groupby("group", sort=False):
        counts = np.bincount(part["bucket"], minlength=NUM_BUCKETS) / len(part)
        rows += [{"group": f"{group} (SP={part['statistical_parity'].iloc[0]:.3f})", "bucket": b, "proportion": p}
                 for b, p in enumerate(counts)]
    fig, ax = plt.subplots(figsize=(5, 3))
    sns.barplot(pd.DataFrame(rows), x="bucket", y="proportion", hue="group", ax=ax)
    ax.axhline(1 / NUM_BUCKETS, ls="--", c="k", lw=1)
    ax.set_xlabel("skin-tone bucket (0 lightest .. 3 darkest)")
    fig.tight_layout()
    return fig


def compositional_table(size: int = 128, owl_dir: str | None = None) -> tuple[Any, str]:
    """Eq. 13 scores of matching vs mismatching prompts on two side-by-side photo pairs.

    Returns the DataFrame and the detector label: OWL from ``owl_dir``, else the ORACLE detector
    (knows which objects each composite shows; demonstrates the reward math, not detection).
    """
    import pandas as pd
    from skimage import data

    from rlsd.rewards.detection import CompositionalReward, OracleDetector, OwlDetector

    def pair(a: str, b: str) -> Tensor:
        halves = [resize_center_crop(_to_tensor(getattr(data, n)()), size) for n in (a, b)]
        return resize_center_crop(torch.cat(halves, dim=3), size)

    images = torch.cat([pair("chelsea", "coffee")] * 3 + [pair("astronaut", "rocket")] * 3)
    present = [["cat", "cup"]] * 3 + [["person", "rocket"]] * 3
    prompts = ["a cat next to a cup", "a cat next to a dog", "a dog and a bicycle",
               "a person near a rocket", "a person near a cup", "a dog beside a bicycle"]
    detector = OwlDetector(owl_dir) if owl_dir else OracleDetector(present)
    label = f"OWL detector from {owl_dir}" if owl_dir else "ORACLE detector (ground-truth objects, not a model)"
    rewards, info = CompositionalReward(detector)(images, prompts, [{}] * 6)
    return pd.DataFrame({"image": ["cat | coffee"] * 3 + ["astronaut | rocket"] * 3, "prompt": prompts,
                         "reward": rewards.numpy(), "all_detected": info["all_detected@0.5"].numpy()}).round(3), label
