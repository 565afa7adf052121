"""Command line: ``python -m rlsd.train --config configs/X.yaml [key=value ...] [--resume auto|PATH]``.

Multi-process: ``accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m rlsd.train ...``; on CPU
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no
--dynamo_backend no -m rlsd.train ...`` (``--cpu --num_processes 2`` starts only one process).

A fresh run (no ``--resume``) refuses a ``log.run_dir`` that already holds files: pass ``--resume auto`` to
continue that run, or choose another ``log.run_dir``.

Bad input (invalid config value, batch not divisible by the world size, missing model folder, NaN reward)
prints one line ``error: ...`` on stderr and exits with code 2; set ``RLSD_DEBUG=1`` for the traceback.
SIGTERM or SIGINT finishes the current iteration, writes a checkpoint, prints one line ``stopped: ...`` and
exits with code 3 (every rank); ``--resume auto`` continues bit-identically. SIGINT outside the training loop
(model loading, export) exits with code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 3  # SIGTERM / SIGINT: stopped after an iteration, with a checkpoint (rlsd.guards.TrainingStopped)
EXIT_INTERRUPTED = 130  # SIGINT before or after the training loop (nothing new saved)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlsd.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/shapes_joint.yaml")
    parser.add_argument("--resume", default=None, help="'auto' (latest checkpoint in log.run_dir) or a checkpoint path")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=1e-5 tasks.0.group_size=8")
    return parser.parse_args(argv)


def run(config: str | Path, overrides: list[str] | tuple[str, ...] = (), resume: str | None = None, *,
        require_empty: bool = False) -> Path:
    """Train in this process (one rank, or one rank of an ``accelerate launch``); returns the run dir.

    ``require_empty`` (the CLI): refuse a fresh run (no ``resume``) in a run dir that already holds files.
    A run dir that is a file or cannot be written is always refused, before the model loads.
    """
    from rlsd.config import load_config
    from rlsd.distributed import shutdown
    from rlsd.guards import TrainingStopped, check_run_dir
    from rlsd.trainer import RLTrainer

    cfg = load_config(config, list(overrides))
    check_run_dir(cfg.log.run_dir, resume, require_empty=require_empty)  # every rank, before any rank writes
    trainer = RLTrainer(cfg)
    try:
        trainer.train(resume=resume)
    except TrainingStopped:  # raised on every rank at the same point
        if trainer.accelerator.num_processes > 1:
            shutdown(trainer.accelerator)
        raise
    if trainer.accelerator.num_processes > 1:
        shutdown(trainer.accelerator)  # a live gloo group at exit can abort rank 0
    return Path(cfg.log.run_dir)


def launch_command(config: str | Path, overrides: list[str] | tuple[str, ...] = (), *, num_processes: int = 2,
                   resume: str | None = None, cpu: bool | None = None) -> tuple[list[str], dict[str, str]]:
    """``accelerate launch`` argv and environment for ``num_processes`` local processes (CPU: gloo)."""
    import torch

    from rlsd.distributed import free_port

    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "rlsd.train", "--config", str(config), *overrides]
    if resume is not None:
        cmd += ["--resume", str(resume)]
    env = dict(os.environ, ACCELERATE_USE_CPU="1") if cpu else dict(os.environ)
    return cmd, env


@contextlib.contextmanager
def _working_dir(path: str | Path | None) -> Iterator[None]:
    """Temporarily change the working directory (config paths are relative to the repository root)."""
    old = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def launch(config: str | Path, overrides: list[str] | tuple[str, ...] = (), *, num_processes: int = 1,
           resume: str | None = None, cwd: str | Path | None = None) -> Path:
    """Train with ``num_processes`` ranks: in this process for 1, else an ``accelerate launch`` subprocess.

    ``cwd`` is the directory that ``config`` and the paths inside it are relative to (e.g. ".." from
    notebooks/). Returns the absolute run dir; raises RuntimeError with the subprocess's last error line.
    """
    with _working_dir(cwd):
        if num_processes <= 1:
            return run(config, overrides, resume).resolve()
        from rlsd.config import load_config

        cfg = load_config(config, list(overrides))
        cfg.validate(world_size=num_processes)
        cmd, env = launch_command(config, overrides, num_processes=num_processes, resume=resume)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] or proc.stderr.splitlines()[-1:]
            raise RuntimeError(f"accelerate launch exited with {proc.returncode}: {lines[-1] if lines else ''}")
        return Path(cfg.log.run_dir).resolve()


def main(argv: list[str] | None = None) -> int:
    from rlsd.guards import TrainingStopped

    args = parse_args(argv)
    try:
        run(args.config, args.overrides, args.resume, require_empty=True)
    except TrainingStopped as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:  # SIGINT while loading or exporting, outside the training loop
        print("stopped: SIGINT outside the training loop; the last complete checkpoint is intact.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("RLSD_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
