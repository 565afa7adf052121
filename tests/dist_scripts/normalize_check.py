"""Launched by tests/test_distributed.py under `accelerate launch` (2 gloo processes on CPU).

Each rank holds its share of a known global batch, gathers it, normalises the advantages and
draws per-slot noise; rank 0 writes everything to the JSON file given as argv[1].
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import Accelerator

from rlsd.distributed import (
    all_reduce_mean,
    gather_objects,
    gather_tensor,
    is_main_process,
    local_slice,
    rank_and_world,
    slot_generators,
    shutdown,
)
from rlsd.objective import normalize_advantages

GLOBAL_REWARDS = [0.3, -1.2, 2.5, 0.0, 7.0, 1.1, -0.4, 3.3]
SEED, ITERATION, NOISE_SHAPE = 1234, 7, (2, 3)


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank, world = rank_and_world(accelerator)
    share = local_slice(len(GLOBAL_REWARDS), rank, world)

    rewards = gather_tensor(accelerator, torch.tensor(GLOBAL_REWARDS[share]))
    advantages = normalize_advantages(rewards)
    prompts = gather_objects(accelerator, [f"prompt {i}" for i in range(share.start, share.stop)])
    ranks = gather_objects(accelerator, [rank])
    mean_of_ranks = all_reduce_mean(accelerator, torch.tensor([float(rank)]))

    gens = slot_generators(SEED, ITERATION, share)
    noise = torch.stack([torch.randn(NOISE_SHAPE, generator=g) for g in gens])
    noise = gather_tensor(accelerator, noise)

    if is_main_process(accelerator):
        with open(out_path, "w") as f:
            json.dump(
                {
                    "world_size": world,
                    "ranks": ranks,
                    "rewards": rewards.tolist(),
                    "advantages": advantages.tolist(),
                    "prompts": prompts,
                    "mean_of_ranks": mean_of_ranks.item(),
                    "noise": noise.tolist(),
                },
                f,
            )
    shutdown(accelerator)


if __name__ == "__main__":
    main(sys.argv[1])
