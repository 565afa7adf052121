"""Run RLTrainer for a few iterations under ``accelerate launch`` (or plain python) and save the UNet weights.

Usage: ``train_equivalence.py OUT.pt key=value ...`` (overrides on top of configs/tiny_sd_smoke.yaml).
The main process writes ``{name: tensor}`` of the final UNet state to OUT.pt.
"""

from __future__ import annotations

import sys

import torch

from rlsd.config import load_config
from rlsd.rewards import Reward, register_reward
from rlsd.trainer import RLTrainer

torch.set_num_threads(1)


@register_reward("test_brightness")
class Brightness(Reward):
    """Mean red minus mean blue: smooth in the pixels (unlike JPEG sizes, which are integers of bytes and
    can jump under 1e-7 pixel changes), so tiny float differences stay tiny through the rewards."""

    name = "test_brightness"

    def score(self, images, prompts, metadata):
        return images[:, 0].mean(dim=(1, 2)) - images[:, 2].mean(dim=(1, 2)), {}


def main() -> None:
    out, overrides = sys.argv[1], sys.argv[2:]
    trainer = RLTrainer(load_config("configs/tiny_sd_smoke.yaml", overrides))
    trainer.train()
    if trainer.is_main:
        torch.save({k: v.detach().cpu() for k, v in trainer.model.unet.state_dict().items()}, out)


if __name__ == "__main__":
    main()
