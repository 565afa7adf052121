"""Checks that stop a run early with one actionable line: a used or unwritable run dir, non-finite numbers.

Each raises ``ValueError`` (the CLI prints it as ``error: ...`` and exits with code 2).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch


def check_run_dir(run_dir: str | Path, resume: str | None, *, require_empty: bool = True) -> None:
    """Refuse a run dir that is a file, cannot be written, or (``require_empty`` and no ``resume``) holds files.

    Called before the model loads, on every rank, so a refused run writes nothing.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"log.run_dir {path} is a file, not a folder; set log.run_dir to a folder path.")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"log.run_dir {path} cannot be written ({existing} is read-only); set log.run_dir to a "
                         "writable folder.")
    if require_empty and resume is None and path.is_dir() and any(path.iterdir()):
        raise ValueError(f"log.run_dir {path} is not empty (an earlier run's files); pass --resume auto to "
                         "continue that run, or set another log.run_dir for a fresh run.")


def first_non_finite(tensors: Iterable[torch.Tensor | None]) -> int | None:
    """Index of the first tensor holding NaN or inf (None entries skipped), or None if all are finite."""
    for i, t in enumerate(tensors):
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            return i
    return None


def check_finite_step(params: list[torch.nn.Parameter], loss: float, *, iteration: int, task: str) -> None:
    """Before an optimizer step: the loss, every gradient and every weight must be finite."""
    if not torch.isfinite(torch.tensor(loss)):
        what = f"loss is {loss}"
    elif first_non_finite(p.grad for p in params) is not None:
        what = "a gradient is NaN/inf"
    elif first_non_finite(params) is not None:
        what = "a weight is NaN/inf"
    else:
        return
    raise ValueError(f"iteration {iteration}, task {task!r}: {what}; stopped before the optimizer step (no "
                     "checkpoint written). Lower train.lr, check train.* values and the reward, then resume "
                     "from the last checkpoint.")


def check_finite_weights(state: dict[str, torch.Tensor], iteration: int) -> None:
    """Before a checkpoint save: refuse to write NaN/inf weights."""
    names = list(state)
    bad = first_non_finite(state[n] for n in names)
    if bad is not None:
        raise ValueError(f"iteration {iteration}: weight {names[bad]} is NaN/inf; refusing to save a checkpoint of "
                         "non-finite weights. Lower train.lr and resume from the last checkpoint.")
