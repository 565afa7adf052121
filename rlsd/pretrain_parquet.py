"""Parquet image-caption data for L_pre, streamed one row group at a time and split across ranks.

Order of the stream (the same on every rank and for every world size):

* epoch ``e`` visits all row groups of all files in the permutation ``np.random.default_rng([seed, e])``,
  and the rows of row group ``g`` in the permutation ``np.random.default_rng([seed, e, g])``, so every row
  is drawn once per epoch;
* stream position ``p`` (0, 1, 2, ...) is the ``p % num_rows``-th row of epoch ``p // num_rows``;
* ``next_batch(n, rank=r, world_size=w)`` returns positions ``position + share(n, r, w)`` and then advances
  ``position`` by ``n``: the ranks' shares are one process's batch, cut into ``w`` contiguous parts.

A rank reads only the row groups that hold its positions (image and caption columns only), keeps at most one
of them in memory, and decodes only its own images. ``state_dict()`` = ``{"seed", "position", "num_rows"}``.
Write files with row groups of a few hundred to a few thousand images
(``pyarrow.parquet.write_table(..., row_group_size=1000)``): a row group is the unit that is read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlsd.pretrain_data import load_image, share

__all__ = ["ParquetStream", "LARGE_ROW_GROUP_BYTES"]

#: a row group above this uncompressed size gets a warning at open (it is held in memory while read)
LARGE_ROW_GROUP_BYTES = 2**30


class ParquetStream:
    """Resumable, rank-sharded L_pre stream over a parquet file or a folder of ``*.parquet`` shards.

    Args:
        path: a parquet file, or a folder whose ``*.parquet`` files (sorted by name) form one dataset.
        size: output resolution; images are centre-cropped to a square and resized to ``size``.
        image_column: encoded image bytes, or ``{"bytes": ...}`` structs as written by HF datasets.
        caption_column: caption strings.
        seed: the order of every epoch (see the module docstring).
    """

    def __init__(self, path: str | Path, size: int, image_column: str = "image", caption_column: str = "caption",
                 seed: int = 0):
        import pyarrow.parquet as pq

        path = Path(path)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.is_file() else []
        if not files:
            raise FileNotFoundError(f"pretrain.dataset.path {path} is neither a parquet file nor a folder of "
                                    "*.parquet files; point it at one.")
        self.groups: list[tuple[Path, int, int]] = []  # (file, row group index in the file, rows)
        for file in files:
            meta = pq.ParquetFile(file).metadata
            names = meta.schema.to_arrow_schema().names
            for col in (image_column, caption_column):
                if col not in names:
                    raise ValueError(f"parquet {file} has no column {col!r} (has {names}); set "
                                     "pretrain.dataset.image_column / caption_column.")
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                if group.total_byte_size > LARGE_ROW_GROUP_BYTES:
                    warnings.warn(f"row group {i} of {file} holds {group.total_byte_size / 2**20:.0f} MiB, which each "
                                  "rank reads whole; rewrite the file with a smaller row_group_size.", stacklevel=2)
                if group.num_rows:
                    self.groups.append((file, i, group.num_rows))
        self.num_rows = sum(rows for _, _, rows in self.groups)
        if not self.num_rows:
            raise ValueError(f"parquet dataset {path} has no rows; point pretrain.dataset.path at image-caption data.")
        self.size, self.columns, self.seed, self.position = size, (image_column, caption_column), int(seed), 0
        self._order: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, group permutation, row starts)
        self._cached: tuple[int, Any] | None = None  # (group id, pyarrow table of that row group)

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Row-group permutation of ``epoch`` and the first epoch offset of each of its groups (plus the end)."""
        if self._order is None or self._order[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.groups))
            starts = np.concatenate([[0], np.cumsum([self.groups[g][2] for g in perm])])
            self._order = (epoch, perm, starts)
        return self._order[1], self._order[2]

    def _runs(self, start: int, stop: int) -> list[tuple[int, int, int, int]]:
        """Positions ``[start, stop)`` as ``(epoch, group, lo, hi)``: rows ``lo:hi`` of the group's permutation."""
        runs, p = [], start
        while p < stop:
            epoch, q = divmod(p, self.num_rows)
            perm, starts = self._epoch_order(epoch)
            k = int(np.searchsorted(starts, q, side="right")) - 1
            lo = q - int(starts[k])
            hi = min(lo + stop - p, int(starts[k + 1] - starts[k]))
            runs.append((epoch, int(perm[k]), lo, hi))
            p += hi - lo
        return runs

    def _row_group(self, group: int) -> Any:
        """The image and caption columns of one row group (the only one held in memory)."""
        import pyarrow.parquet as pq

        if self._cached is None or self._cached[0] != group:
            self._cached = None  # drop the previous group before reading the next
            file, index, _ = self.groups[group]
            self._cached = (group, pq.ParquetFile(file).read_row_group(index, columns=list(self.columns)))
        return self._cached[1]

    def _read(self, epoch: int, group: int, lo: int, hi: int) -> list[tuple[Any, str]]:
        rows = np.random.default_rng([self.seed, epoch, group]).permutation(self.groups[group][2])[lo:hi]
        table = self._row_group(group).take(rows)
        images, captions = (table.column(c).to_pylist() for c in self.columns)
        return [(im["bytes"] if isinstance(im, dict) else im, str(c)) for im, c in zip(images, captions)]

    def next_batch(self, n: int, *, rank: int = 0, world_size: int = 1) -> tuple[Tensor, list[str]]:
        """This rank's share of the next global batch of ``n``: images ``(n // world_size, 3, H, W)`` in [0, 1]
        and their captions; every rank advances the position by ``n``."""
        local = share(n, rank, world_size)
        runs = self._runs(self.position + local.start, self.position + local.stop)
        items = [item for run in runs for item in self._read(*run)]
        self.position += n
        return torch.stack([load_image(data, self.size) for data, _ in items]), [c for _, c in items]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "position": self.position, "num_rows": self.num_rows}

    def load_state_dict(self, state: dict) -> None:
        if "position" not in state:
            raise ValueError("the checkpoint's L_pre state has no parquet stream position (it is from the earlier "
                             "with-replacement sampler); resume it with the rlsd version that wrote it.")
        if (state["seed"], state["num_rows"]) != (self.seed, self.num_rows):
            raise ValueError(f"the checkpoint's L_pre stream has seed {state['seed']} over {state['num_rows']} rows, "
                             f"but pretrain.dataset gives seed {self.seed} over {self.num_rows}; resume with the "
                             "dataset and seed of the saved config.")
        self.position = int(state["position"])
