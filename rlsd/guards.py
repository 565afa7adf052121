"""Checks that stop a run early with one actionable line: a used or unwritable run dir, non-finite numbers,
and the SIGTERM / SIGINT stop request.

The checks raise ``ValueError`` (the CLI prints it as ``error: ...`` and exits with code 2). A signal does not
raise at once: :class:`StopSignals` records it, the trainer finishes the iteration, writes a checkpoint and
raises :class:`TrainingStopped` (the CLI prints ``stopped: ...`` and exits with code 3).
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

import torch

#: signals that stop a run after the current iteration and a checkpoint (SLURM / Kubernetes send SIGTERM)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    """Index of the first tensor holding NaN or inf (None entries skipped), or None if all are finite.

    One device-to-host copy for all tensors (not one per tensor), so it is cheap enough for every step.
    """
    index, flags = [], []
    for i, t in enumerate(tensors):
        if t is not None:
            index.append(i)
            flags.append(torch.isfinite(t.detach()).all())
    if not flags:
        return None
    ok = torch.stack([f.to(flags[0].device) for f in flags]).cpu()
    return None if bool(ok.all()) else index[int((~ok).nonzero()[0])]


def check_finite_step(params: list[torch.nn.Parameter], loss: float | None, *, iteration: int, task: str,
                      lr: float | None = None, grads: bool = True) -> None:
    """Before an optimizer step: the loss, the learning rate, every gradient and every weight must be finite.

    ``grads=False`` skips the gradients: an fp16 loss scaler skips the steps whose gradients overflowed itself.
    """
    if loss is not None and not math.isfinite(loss):
        what = f"the loss is {loss}"
    elif lr is not None and not math.isfinite(lr):
        what = f"the learning rate is {lr}"
    elif grads and first_non_finite(p.grad for p in params) is not None:
        what = "a gradient is NaN/inf"
    elif first_non_finite(params) is not None:
        what = "a weight is NaN/inf"
    else:
        return
    raise ValueError(f"iteration {iteration}, task {task!r}: {what}; stopped before the optimizer step (no "
                     "checkpoint of these weights written). Lower train.lr, check train.* values and the reward, "
                     "then resume from the last checkpoint.")


def check_finite_weights(state: dict[str, torch.Tensor], iteration: int) -> None:
    """Before a checkpoint save: refuse to write NaN/inf weights."""
    names = list(state)
    bad = first_non_finite(state[n] for n in names)
    if bad is not None:
        raise ValueError(f"iteration {iteration}: weight {names[bad]} is NaN/inf; refusing to save a checkpoint of "
                         "non-finite weights. Lower train.lr and resume from the last checkpoint.")


class TrainingStopped(Exception):
    """Raised by ``RLTrainer.train`` on every rank after a stop signal, once the checkpoint is written."""

    exit_code = 3

    def __init__(self, signal_name: str, iteration: int, checkpoint: Path):
        super().__init__(f"{signal_name} received: stopped after iteration {iteration} with checkpoint {checkpoint}; "
                         "continue with --resume auto.")
        self.signal_name, self.iteration, self.checkpoint = signal_name, iteration, checkpoint


class StopSignals:
    """Context manager: SIGTERM / SIGINT set :attr:`received` instead of ending the process.

    The trainer polls it once per iteration. Repeated signals are ignored, since launchers forward the one
    they get (a Ctrl-C reaches the workers twice under ``accelerate launch``); SIGKILL still ends the run at
    once and leaves the last complete checkpoint valid. Outside the main thread (where Python cannot install
    handlers) it does nothing.
    """

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    @property
    def name(self) -> str | None:
        """The first signal's name (``"SIGTERM"``), or None before any arrived."""
        return None if self.received is None else signal.Signals(self.received).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
