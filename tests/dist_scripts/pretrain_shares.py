"""Launched by tests/test_pretrain_streams.py under `accelerate launch` (2 gloo processes on CPU).

Usage: ``pretrain_shares.py SPEC_JSON OUT_DIR``. Every rank streams ``STEPS`` global L_pre batches of ``N`` from
the dataset spec, counting the images it decodes (``PIL.Image.open`` calls); after ``RESUME_AT`` batches the
stream position is checkpointed, and a fresh stream restored from that checkpoint draws the remaining
batches. Each rank writes ``OUT_DIR/rank<r>.pt`` with its images, captions, decode counts and both runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from PIL import Image

from rlsd.checkpoint import load_checkpoint, save_checkpoint
from rlsd.distributed import rank_and_world, shutdown
from rlsd.pretrain_data import build_pretrain_source

N, STEPS, RESUME_AT, SIZE, SEED = 8, 3, 1, 8, 5
DECODES = [0]
_open = Image.open


def counting_open(*args, **kwargs):
    DECODES[0] += 1
    return _open(*args, **kwargs)


def main(spec_json: str, out_dir: str) -> None:
    Image.open = counting_open
    accelerator = Accelerator(cpu=True)
    rank, world = rank_and_world(accelerator)
    spec, out = json.loads(spec_json), Path(out_dir)
    stream = build_pretrain_source(spec, image_size=SIZE, seed=SEED)
    batches, decodes = [], []
    for _ in range(STEPS):
        before = DECODES[0]
        batches.append(stream.next_batch(N, rank=rank, world_size=world))
        decodes.append(DECODES[0] - before)
    first = build_pretrain_source(spec, image_size=SIZE, seed=SEED)
    for _ in range(RESUME_AT):
        first.next_batch(N, rank=rank, world_size=world)
    ckpt = save_checkpoint(out / "ckpt", {"pretrain": first.state_dict()}, accelerator=accelerator)
    resumed = build_pretrain_source(spec, image_size=SIZE, seed=SEED)
    resumed.load_state_dict(load_checkpoint(ckpt)["pretrain"])
    after = [resumed.next_batch(N, rank=rank, world_size=world) for _ in range(STEPS - RESUME_AT)]
    torch.save({"rank": rank, "world": world, "images": [b[0] for b in batches], "captions": [b[1] for b in batches],
                "decodes": decodes, "resumed_images": [b[0] for b in after],
                "resumed_captions": [b[1] for b in after], "state": stream.state_dict()}, out / f"rank{rank}.pt")
    shutdown(accelerator)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
