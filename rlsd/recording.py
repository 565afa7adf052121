"""Run recording: resolved config, scalars (tensorboard + CSV), image grids, and figures.

Scalar keys are namespaced, ``<family>/<name>``:

=========================  ==============================================
key                        meaning
=========================  ==============================================
``reward/<task>/mean``     mean reward of a task over the global batch
``loss/ppo``               PPO-clip loss (``rlsd.objective.ppo_clip_loss``)
``loss/pretrain``          denoising loss L_pre
``ppo/approx_kl``          and ``ppo/clipfrac``, ``ppo/ratio_mean`` ...
``time/sample_s``          wall time of a phase, seconds
``perf/samples_per_s``     throughput
``lr``                     learning rate
=========================  ==============================================

``metrics.csv`` is long format (``step,key,value``), which stays valid when new keys appear;
:func:`read_metrics` pivots it to one column per key.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
_HEADER = ["step", "key", "value"]


def _plain(obj: Any) -> Any:
    """Convert configs (dataclasses, Paths, tuples, numpy scalars) to YAML/JSON-safe python."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic, torch.Tensor)) and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


class RunLogger:
    """Writes ``config.yaml``, ``metrics.csv``, tensorboard events (``tb/``) and ``images/``.

    Construct with ``enabled=is_main_process(accelerator)``: a disabled logger does nothing.
    To resume, pass ``resume_step``: CSV rows and tensorboard events after it are dropped.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        config: Any = None,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        self._csv_file = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (self.run_dir / CONFIG_FILE).write_text(yaml.safe_dump(_plain(config), sort_keys=False))
        if resume_step is not None:
            self.truncate_after(resume_step)
        self._open_csv()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: slow import

            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    def _open_csv(self) -> None:
        new = not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0
        self._csv_file = open(self.metrics_path, "a", newline="")
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(_HEADER)
            self._csv_file.flush()

    def log_scalars(self, step: int, scalars: dict[str, float | torch.Tensor]) -> None:
        """Log ``{key: value}`` at ``step`` (values: numbers or 0-d tensors)."""
        if not self.enabled:
            return
        for key, value in scalars.items():
            v = float(value.item() if isinstance(value, (torch.Tensor, np.generic)) else value)
            self._csv.writerow([int(step), key, repr(v)])
            if self._writer is not None:
                self._writer.add_scalar(key, v, int(step))
        self._csv_file.flush()

    def log_images(
        self, step: int, images: torch.Tensor, captions: list[str] | None = None, tag: str = "samples"
    ) -> Path | None:
        """Save a grid of ``images`` (B, 3, H, W) in [0, 1] to ``images/<tag>_<step>.png`` and tensorboard.

        Captions (one per image, row-major) are drawn under each image (upscaled to a readable size) and also go
        to a ``.txt`` file next to the PNG and to tensorboard text.
        """
        if not self.enabled:
            return None
        from PIL import Image

        grid = image_grid(images) if captions is None else captioned_grid(images, captions)
        safe_tag = tag.replace("/", "_")
        out = self.run_dir / "images" / f"{safe_tag}_{int(step):06d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(out)
        if captions is not None:  # captioned_grid has checked there is one per image
            out.with_suffix(".txt").write_text("\n".join(captions) + "\n")
        if self._writer is not None:
            self._writer.add_image(tag, grid, int(step), dataformats="HWC")
            if captions is not None:
                self._writer.add_text(f"{tag}/captions", "  \n".join(captions), int(step))
        return out

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows with ``step`` greater than the given one (used when resuming)."""
        if not self.enabled or not self.metrics_path.exists():
            return
        reopen = self._csv_file is not None
        if reopen:
            self._csv_file.close()
        with open(self.metrics_path, newline="") as f:
            rows = [r for r in csv.reader(f)][1:]
        kept = [r for r in rows if r and int(r[0]) <= step]
        with open(self.metrics_path, "w", newline="") as f:
            csv.writer(f).writerows([_HEADER, *kept])
        if reopen:
            self._open_csv()

    def close(self) -> None:
        """Flush and close the CSV and tensorboard files."""
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(run_dir: str | Path):
    """``metrics.csv`` as a wide pandas DataFrame: index ``step``, one column per key (last value wins)."""
    import pandas as pd

    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the run dir that RunLogger wrote to")
    long = pd.read_csv(path)
    wide = long.pivot_table(index="step", columns="key", values="value", aggfunc="last", dropna=False)
    wide.columns.name = None
    return wide.sort_index()


def print_table(table, csv_path: str | Path | None = None, digits: int = 4) -> None:
    """Print ``table`` (a ``tools/`` script's DataFrame) to ``digits`` significant digits; save it to ``csv_path``."""
    table.to_string(sys.stdout, index=False, float_format=lambda v: f"{v:.{digits}g}")
    print()
    if csv_path is not None:
        table.to_csv(csv_path, index=False)


def image_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile ``images`` (B, 3, H, W) in [0, 1] into a uint8 (H_grid, W_grid, 3) array, ``nrow`` per row.

    ``nrow`` defaults to ceil(sqrt(B)); padding is white. The tiling is ``diffusers.utils.make_image_grid``.
    """
    from PIL import ImageOps

    tiles = [ImageOps.expand(t, border=(0, 0, padding, padding), fill="white") for t in _to_pil(images)]
    grid = _tile(tiles, nrow)
    return np.asarray(ImageOps.expand(grid, border=(padding, padding, 0, 0), fill="white"))


def captioned_grid(images: torch.Tensor | np.ndarray, captions: list[str], nrow: int | None = None,
                   min_side: int = 128, max_lines: int = 3) -> np.ndarray:
    """Like :func:`image_grid`, each image upscaled (nearest) to at least ``min_side`` px with its caption below.

    Small renders (ShapesWorld's 32 px) become readable; a caption wraps to at most ``max_lines`` lines.
    """
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    tiles = _to_pil(images)
    if len(captions) != len(tiles):
        raise ValueError(f"got {len(captions)} captions for {len(tiles)} images; pass one per image")
    scale = max(1, math.ceil(min_side / min(tiles[0].size)))
    w, h = tiles[0].width * scale, tiles[0].height * scale
    font = ImageFont.load_default(size=max(10, w // 14))
    chars = max(8, int(w / (font.size * 0.55)))
    line_h = font.size + 3
    panels = []
    for tile, caption in zip(tiles, captions):
        panel = Image.new("RGB", (w + 4, h + 4 + max_lines * line_h), "white")
        panel.paste(tile.resize((w, h), Image.NEAREST), (2, 2))
        lines = textwrap.wrap(caption, chars)
        if len(lines) > max_lines:
            lines = lines[: max_lines - 1] + [textwrap.shorten(" ".join(lines[max_lines - 1 :]), chars, placeholder="...")]
        draw = ImageDraw.Draw(panel)
        for i, line in enumerate(lines):
            draw.text((3, h + 4 + i * line_h), line, fill="black", font=font)
        panels.append(panel)
    return np.asarray(_tile(panels, nrow))


def _to_pil(images: torch.Tensor | np.ndarray) -> list:
    from PIL import Image

    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}")
    arr = (x.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def _tile(tiles: list, nrow: int | None):
    """``make_image_grid`` of ``tiles`` (equal-sized PIL images), ``nrow`` (default ceil(sqrt(n))) per row, the
    last row filled with white."""
    from diffusers.utils import make_image_grid
    from PIL import Image

    nrow = nrow or max(1, math.ceil(math.sqrt(len(tiles))))
    rows = math.ceil(len(tiles) / nrow)
    blank = Image.new("RGB", tiles[0].size, "white")
    return make_image_grid(tiles + [blank] * (rows * nrow - len(tiles)), rows=rows, cols=nrow)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def save_figure(fig, name: str, *, params: dict, data_source: str, out_dir: str | Path = "figures") -> dict[str, Path]:
    """Save a matplotlib figure as ``<out_dir>/<name>.png`` and ``.pdf`` with a ``.json`` sidecar.

    The sidecar records the git commit of the repository holding ``out_dir`` ("unknown" outside a
    repository), whether tracked files had uncommitted changes before the figure was written, ``params``, ``data_source`` and a UTC timestamp.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / f"{name}.png", "pdf": out / f"{name}.pdf", "json": out / f"{name}.json"}
    # measured before writing: overwriting a tracked figure must not make the code that drew it look dirty
    commit = _git(["rev-parse", "HEAD"], out.resolve())
    status = _git(["status", "--porcelain", "--untracked-files=no"], out.resolve()) if commit else None
    fig.savefig(paths["png"], dpi=150, bbox_inches="tight")
    fig.savefig(paths["pdf"], bbox_inches="tight", metadata={"CreationDate": None})
    sidecar = {
        "name": name,
        "git_commit": commit or "unknown",
        "git_dirty": None if status is None else bool(status),
        "params": _plain(params),
        "data_source": data_source,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": [paths["png"].name, paths["pdf"].name],
    }
    paths["json"].write_text(json.dumps(sidecar, indent=2) + "\n")
    return paths


def enter_repo_root(start: str | Path | None = None) -> Path:
    """``chdir`` to the repository root above ``start`` (default: the cwd) and return it.

    Notebooks call this first, so every path parameter they take is relative to the repository root,
    whether Jupyter, papermill or nbval started the kernel in ``notebooks/`` or at the root.
    """
    import os

    here = Path(start or Path.cwd()).resolve()
    root = next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file() and (p / "rlsd").is_dir()), None)
    if root is None:
        raise FileNotFoundError(f"no rlsd checkout (pyproject.toml beside rlsd/) at or above {here}; "
                                "start the notebook inside the repository")
    os.chdir(root)
    return root
