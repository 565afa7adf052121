"""Atomic checkpoints of the trainer state, including every RNG state.

Layout of one checkpoint (``<run_dir>/checkpoints/iter_000010/``)::

    trainer_state.pt     torch.save of the ``state`` dict (iteration, optimizer, lr scheduler,
                         prompt source, stat tracker, ``rng`` from capture_rng_state, config, ...)
    model.safetensors    optional: a flat tensor state dict (full UNet or LoRA weights)
    <extra files>        optional: whatever ``save_extra(folder)`` writes (e.g. export_model)
    COMPLETE             marker, written last: JSON with the iteration and the byte size of every file

Everything is written to ``iter_000010.tmp-<pid>`` first and renamed into place only after the
marker exists, so a run killed while saving never leaves a directory that :func:`load_checkpoint`
or :func:`latest_checkpoint` accepts; :func:`remove_stale_writes` deletes such leftovers at the next
start. A checkpoint whose files no longer have the sizes in its marker (truncated, e.g. by a full disk
or a hand copy) is corrupt: :func:`load_checkpoint` refuses it and :func:`latest_checkpoint` falls back
to the newest intact one with a warning. Sizes catch truncation, not flipped bits.

Per-rank sampling streams are re-derived from ``(seed, iteration, slot)`` by ``rlsd.distributed``,
so only the main process's global RNG state is stored.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsd.distributed import is_main_process, wait_for_everyone

STATE_FILE = "trainer_state.pt"
MODEL_FILE = "model.safetensors"
MARKER_FILE = "COMPLETE"
_ITER_DIR = re.compile(r"^iter_(\d+)$")
_STALE_DIR = re.compile(r"^(iter_\d+)\.(tmp|old)-\d+$")  # unfinished writes of a killed process


def checkpoint_dir(run_dir: str | Path, iteration: int) -> Path:
    """``<run_dir>/checkpoints/iter_<iteration:06d>``."""
    return Path(run_dir) / "checkpoints" / f"iter_{iteration:06d}"


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Python ``random``, numpy, torch CPU, torch CUDA (if available) and named generator states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state`; ``generators`` are restored in place by name."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch_cpu"])
    cuda = state.get("torch_cuda")
    if cuda is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(
                f"checkpoint holds CUDA RNG states for {len(cuda)} device(s) but "
                f"{torch.cuda.device_count()} are visible; CUDA RNG state not restored",
                stacklevel=2,
            )
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise ValueError(f"checkpoint has no RNG state for generator {name!r}; saved: {sorted(saved)}")
        gen.set_state(saved[name])


def save_checkpoint(
    path_dir: str | Path,
    state: dict[str, Any] | Callable[[], dict[str, Any]],
    *,
    model_state: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor] | None] | None = None,
    save_extra: Callable[[Path], None] | None = None,
    accelerator: Any | None = None,
    keep_last: int | None = None,
) -> Path:
    """Atomically write a checkpoint to ``path_dir`` (replacing an existing one).

    Only the main process writes; all processes wait for it when ``accelerator`` is given.

    Args:
        path_dir: final folder, usually ``checkpoint_dir(run_dir, iteration)``.
        state: picklable trainer state; should contain ``iteration`` and ``rng``. A callable is called on the
            main process only, so the other ranks never build the state.
        model_state: flat tensor dict saved as safetensors (UNet or LoRA weights), or a callable returning
            it (main process only, as for ``state``).
        save_extra: called with the temporary folder to write further files into it.
        keep_last: afterwards delete all but the newest ``keep_last`` complete checkpoints
            that are siblings of ``path_dir``.

    Returns:
        ``path_dir`` as a Path.
    """
    final = Path(path_dir)
    if is_main_process(accelerator):
        state = state() if callable(state) else state
        model_state = model_state() if callable(model_state) else model_state
        _write_atomically(final, state, model_state, save_extra)
        if keep_last is not None:
            prune_checkpoints(final.parent, keep_last)
    wait_for_everyone(accelerator)
    return final


def _write_atomically(
    final: Path,
    state: dict[str, Any],
    model_state: dict[str, torch.Tensor] | None,
    save_extra: Callable[[Path], None] | None,
) -> None:
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        torch.save(state, tmp / STATE_FILE)
        if model_state is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / MODEL_FILE))
        if save_extra is not None:
            save_extra(tmp)
        sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        marker = {"iteration": state.get("iteration"), "files": sorted(p.name for p in tmp.iterdir()), "sizes": sizes}
        (tmp / MARKER_FILE).write_text(json.dumps(marker))
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)  # a directory cannot be os.replace'd over a non-empty one
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` to disk before the rename makes it visible."""
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def is_complete(path_dir: str | Path) -> bool:
    """True if ``path_dir`` is a finished checkpoint (has the COMPLETE marker)."""
    return (Path(path_dir) / MARKER_FILE).is_file()


def checkpoint_problem(path_dir: str | Path) -> str | None:
    """Why the complete checkpoint ``path_dir`` is corrupt (a file missing or of another size than its marker
    records), or None if it is intact. Markers written before sizes were recorded cannot be checked: None."""
    path = Path(path_dir)
    try:
        sizes = json.loads((path / MARKER_FILE).read_text()).get("sizes")
    except (OSError, ValueError, AttributeError):
        return f"unreadable {MARKER_FILE} marker"
    for name, size in (sizes or {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} of {size} bytes"
    return None


def load_checkpoint(path_dir: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load ``trainer_state.pt`` (plus ``model_state`` from model.safetensors if present).

    Checkpoints are trusted files written by :func:`save_checkpoint`, so they are unpickled with
    ``weights_only=False`` (they hold numpy / python RNG states).
    """
    path = Path(path_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist; pass a folder from latest_checkpoint()")
    if not is_complete(path):
        raise ValueError(
            f"checkpoint {path} is incomplete (no {MARKER_FILE} marker), probably interrupted while saving; "
            "delete it and resume from an earlier checkpoint"
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(f"checkpoint {path} is corrupt ({problem}); delete it and resume from an earlier "
                         "checkpoint (--resume auto picks the newest intact one)")
    state = torch.load(path / STATE_FILE, map_location=map_location, weights_only=False)
    if (path / MODEL_FILE).is_file():
        from safetensors.torch import load_file

        state["model_state"] = load_file(str(path / MODEL_FILE), device=str(map_location))
    state["checkpoint_path"] = path
    return state


def list_checkpoints(run_dir_or_ckpt_root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (iteration, path), oldest first.

    Accepts a run dir (looks in ``<run_dir>/checkpoints``) or the checkpoints folder itself.
    """
    root = Path(run_dir_or_ckpt_root)
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _ITER_DIR.match(p.name)
        if m and p.is_dir() and is_complete(p):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The intact complete checkpoint with the highest iteration number, or None if there is no checkpoint.

    A corrupt newer checkpoint (see :func:`checkpoint_problem`) is skipped with a warning naming the one used
    instead; raises ValueError if every complete checkpoint is corrupt.
    """
    found = list_checkpoints(run_dir)
    corrupt: list[tuple[Path, str]] = []
    for _, path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            if corrupt:
                names = ", ".join(f"{p.name} ({why})" for p, why in corrupt)
                warnings.warn(f"skipped corrupt checkpoint {names}; using the newest intact one, {path}",
                              stacklevel=2)
            return path
        corrupt.append((path, problem))
    if corrupt:
        path, problem = corrupt[0]
        raise ValueError(f"no intact checkpoint in {run_dir}: all {len(corrupt)} are corrupt (the newest, "
                         f"{path.name}: {problem}); restore one from a copy or start a fresh run in another "
                         "log.run_dir.")
    return None


def prune_checkpoints(run_dir_or_ckpt_root: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; returns the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}; use None to keep every checkpoint")
    doomed = [p for _, p in list_checkpoints(run_dir_or_ckpt_root)[:-keep_last]]
    for p in doomed:
        shutil.rmtree(p)
    return doomed


def remove_stale_writes(run_dir_or_ckpt_root: str | Path) -> list[Path]:
    """Clean up after a process killed while saving; returns the folders removed.

    Deletes every ``iter_N.tmp-<pid>`` folder and every ``iter_N.old-<pid>`` one whose ``iter_N`` exists. An
    ``old`` folder without its ``iter_N`` (killed between the two renames) is the replaced checkpoint: if
    complete it is renamed back. Call it at start-up on the main process only, before this run saves.
    """
    root = Path(run_dir_or_ckpt_root)
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    if not root.is_dir():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        m = _STALE_DIR.match(p.name)
        if not m or not p.is_dir():
            continue
        final = root / m.group(1)
        if m.group(2) == "old" and not final.exists() and is_complete(p):
            p.rename(final)
            continue
        shutil.rmtree(p)
        removed.append(p)
    return removed
