"""Faults in a real multi-process run: ``accelerate launch ... fault_check.py OUT_DIR key=value ...``.

Rank 1 alone gets SIGTERM while sampling iteration 1 and alone reports a first re-scored ratio that deviates by
0.5 from 1. Every rank writes ``OUT_DIR/rank<r>.json``: the iteration and signal its ``TrainingStopped`` named,
the logged ``ppo/ratio_first_abs_dev`` of every iteration, and how often it built the checkpoint state
(``trainer_state``) and copied the UNet weights (``state_dict``), and the error that
``check_on_all_ranks`` raised on it when only rank 1's check failed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

import rlsd.trainer_state
from rlsd.config import load_config
from rlsd.distributed import check_on_all_ranks, shutdown
from rlsd.guards import TrainingStopped
from rlsd.trainer import RLTrainer

torch.set_num_threads(1)
BAD_RATIO_DEV = 0.5


def main() -> None:
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    trainer = RLTrainer(load_config("configs/tiny_sd_smoke.yaml", overrides))
    rank, counts, ratio_devs = trainer.rank, {"trainer_state": 0, "state_dict": 0}, []

    build = rlsd.trainer_state.trainer_state
    rlsd.trainer_state.trainer_state = lambda tr: counts.__setitem__("trainer_state", counts["trainer_state"] + 1) \
        or build(tr)
    unet, state_dict = trainer.model.unet, trainer.model.unet.state_dict
    unet.state_dict = lambda *a, **k: counts.__setitem__("state_dict", counts["state_dict"] + 1) or state_dict(*a, **k)

    collect, policy_step, step = trainer.collect, trainer.policy_step, trainer.step

    def collect_and_signal(task_index, iteration):
        if rank == 1 and iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return collect(task_index, iteration)

    def skewed_step(batches, j, tasks):
        stats = policy_step(batches, j, tasks)
        if rank == 1:
            stats["ratio_abs_dev"] = BAD_RATIO_DEV
        return stats

    def logged_step(iteration):
        metrics = step(iteration)
        ratio_devs.append(metrics["ppo/ratio_first_abs_dev"])
        return metrics

    trainer.collect, trainer.policy_step, trainer.step = collect_and_signal, skewed_step, logged_step
    result = {"rank": rank, "world": trainer.world}
    try:
        trainer.train()
    except TrainingStopped as stop:
        result.update(stopped_at=stop.iteration, signal=stop.signal_name, checkpoint=str(stop.checkpoint))
    result.update(ratio_first_abs_dev=ratio_devs, counts=counts)

    def check() -> None:
        if rank == 1:
            raise ValueError("rank 1 found NaN")

    try:
        check_on_all_ranks(trainer.accelerator, check)
    except ValueError as err:
        result["check_error"] = str(err)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    shutdown(trainer.accelerator)


if __name__ == "__main__":
    main()
