"""What an RLTrainer checkpoint holds, and saving/restoring it through ``rlsd.checkpoint`` (atomic, RNG states).

Contents: trainable UNet weights (all, or the LoRA matrices), optimizer, LR schedule, iteration, prompt-source
positions, per-prompt trackers, L_pre stream position and the resolved config. Every per-iteration generator
is derived from ``(seed, iteration)``, so with these states (plus the global RNG states that
``rlsd.checkpoint`` captures) a resumed run continues bit-identically on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlsd.trainer_setup import load_trainable_state_dict


def trainer_state(trainer: Any) -> dict:
    """The resumable state of ``trainer`` as a dict of tensors / plain values."""
    from rlsd.checkpoint import capture_rng_state

    return {
        "iteration": trainer.iteration,
        "rng": capture_rng_state(),
        "optimizer": trainer.optimizer.state_dict(),
        "lr_scheduler": trainer.lr_scheduler.state_dict(),
        "prompt_sources": [s.state_dict() for s in trainer.prompt_sources],
        "trackers": [t.state_dict() for t in trainer.trackers],
        "pretrain": trainer.pretrain.state_dict() if trainer.pretrain is not None else None,
        "config": trainer.cfg.to_dict(),
    }


def restore_trainer_state(trainer: Any, state: dict) -> None:
    """Inverse of :func:`trainer_state` plus the weights in ``state["model_state"]`` (in place)."""
    from rlsd.checkpoint import restore_rng_state

    load_trainable_state_dict(trainer.accelerator.unwrap_model(trainer.unet), state["model_state"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    if len(state["prompt_sources"]) != len(trainer.prompt_sources):
        raise ValueError(f"checkpoint has {len(state['prompt_sources'])} tasks but the config has "
                         f"{len(trainer.prompt_sources)}; resume with the config saved in the run dir.")
    for source, s in zip(trainer.prompt_sources, state["prompt_sources"]):
        source.load_state_dict(s)
    for tracker, s in zip(trainer.trackers, state["trackers"]):
        tracker.load_state_dict(s)
    if trainer.pretrain is not None and state.get("pretrain") is not None:
        trainer.pretrain.load_state_dict(state["pretrain"])
    trainer.iteration = int(state["iteration"])
    restore_rng_state(state["rng"])


def save_trainer_state(trainer: Any) -> Path:
    """Write ``run_dir/checkpoints/iter_XXXXXX`` atomically; returns it. Only the main process builds the state
    and writes it (DDP ranks hold equal state); every rank joins the weight gather of a sharded engine."""
    from rlsd.checkpoint import checkpoint_dir, save_checkpoint
    from rlsd.distributed import model_state_on_main

    names = [n for n, p in trainer.accelerator.unwrap_model(trainer.unet).named_parameters() if p.requires_grad]
    model_state = model_state_on_main(trainer.accelerator, trainer.unet, names)
    return save_checkpoint(checkpoint_dir(trainer.cfg.log.run_dir, trainer.iteration), lambda: trainer_state(trainer),
                           model_state=model_state, accelerator=trainer.accelerator,
                           keep_last=trainer.cfg.log.keep_last)


def load_trainer_state(trainer: Any, where: str | Path) -> None:
    """Resume from a checkpoint folder, or ``"auto"``: the latest under run_dir (none => start fresh)."""
    from rlsd.checkpoint import latest_checkpoint, load_checkpoint

    if str(where) == "auto":
        path = latest_checkpoint(trainer.cfg.log.run_dir)
        if path is None:
            return
    else:
        path = Path(where)
        if not path.exists():
            raise FileNotFoundError(f"--resume {path} does not exist; pass a checkpoint folder or 'auto'.")
    restore_trainer_state(trainer, load_checkpoint(path))
