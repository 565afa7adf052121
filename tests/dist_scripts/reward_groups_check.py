"""2-process check: a distribution-level reward computed per rank on its local prompt groups
equals the single-process result on the whole batch (no gather inside the reward).

Launched by tests/test_rewards_distributed.py with
``accelerate launch --multi_gpu --num_processes 2 ... reward_groups_check.py OUT_DIR``;
each rank writes OUT_DIR/rank<k>.json with the world size it saw and the max abs difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from rlsd.rewards import DistributionReward
from rlsd.rewards.parity import statistical_parity

NUM_GROUPS, GROUP_SIZE = 6, 4


class BrightnessParity(DistributionReward):
    """-SP over 4 brightness buckets of the images in a group (a stand-in for skin-tone parity)."""

    name = "brightness_parity"

    def score_group(self, images, prompts, metadata):
        buckets = (images.mean(dim=(1, 2, 3)) * 4).clamp(max=3.999).long()
        return -statistical_parity(buckets, 4), {"bucket": buckets.float()}


def main() -> None:
    state = PartialState(cpu=True)
    out_dir = Path(sys.argv[1])
    g = torch.Generator().manual_seed(0)  # the same global batch on every rank
    images = torch.rand(NUM_GROUPS * GROUP_SIZE, 3, 4, 4, generator=g) ** torch.linspace(0.2, 3, NUM_GROUPS * GROUP_SIZE).view(-1, 1, 1, 1)
    prompts = [f"prompt {i // GROUP_SIZE}" for i in range(len(images))]
    metadata = [{"group": i // GROUP_SIZE} for i in range(len(images))]
    reward = BrightnessParity()
    full, _ = reward(images, prompts, metadata)
    # the trainer's layout: whole groups per rank (groups rank, rank + world, ...)
    local = [i for i in range(len(images)) if (i // GROUP_SIZE) % state.num_processes == state.process_index]
    local_rewards, _ = reward(images[local], [prompts[i] for i in local], [metadata[i] for i in local])
    diff = float((local_rewards - full[local]).abs().max())
    distinct = len(set(full.tolist()))
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"rank": state.process_index, "world_size": state.num_processes, "max_abs_diff": diff,
              "num_local": len(local), "distinct_group_values": distinct}
    (out_dir / f"rank{state.process_index}.json").write_text(json.dumps(record))
    state.wait_for_everyone()


if __name__ == "__main__":
    main()
