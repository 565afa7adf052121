"""Learned ShapesWorld preference reward (the ImageReward analogue) and its training CLI.

A tiny CNN image encoder and a token-embedding caption encoder feed an MLP that outputs one
scalar score per (image, caption). It is trained with the Bradley-Terry loss
``-log sigmoid(s_winner - s_loser)`` on synthetic pairs labelled by the hidden gold function
(:mod:`rlsd.shapes.gold`): both images of a pair answer the same caption, each matches it with
probability 0.75 (else it renders another caption) and is degraded with probability 0.5.
Like the human annotators of ImageReward, whose tied pairs are dropped, the gold "annotator"
calls a pair a tie when its gold scores differ by at most ``min_gap`` (default 0.02, i.e. 2% of
the score range), and tied pairs are redrawn; held-out pairs come from the same process.

    python -m rlsd.shapes.preference --out data/shapesworld_preference --steps 8000 --seed 0

writes ``model.safetensors``, ``config.json`` and ``MANIFEST.json`` (sha256, command, seed,
held-out agreement with gold, wall time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlsd.shapes.grammar import COLOURS, SHAPES, CaptionSpec, ObjectSpec, all_two_object_specs, spec_caption
from rlsd.shapes.render import render
from rlsd.shapes.scene import DEGRADATIONS, sample_scene
from rlsd.shapes.tokenizer import MODEL_MAX_LENGTH, build_tokenizer

__all__ = ["PreferenceModel", "TIE_GAP", "make_pairs", "load_preference_model", "agreement", "main"]


class PreferenceModel(nn.Module):
    """score(images (B, 3, 32, 32) in [0, 1], token ids (B, L)) -> (B,) unbounded scores."""

    def __init__(self, vocab_size: int = 20, max_length: int = MODEL_MAX_LENGTH, width: int = 32):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "max_length": max_length, "width": width}
        self.image = nn.Sequential(
            nn.Conv2d(3, 24, 3, padding=1), nn.SiLU(),
            nn.Conv2d(24, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.SiLU(),
        )
        self.token = nn.Embedding(vocab_size, 32)
        self.position = nn.Parameter(torch.zeros(max_length, 32))
        self.text = nn.Sequential(nn.Flatten(), nn.Linear(max_length * 32, 64), nn.SiLU())
        self.head = nn.Sequential(nn.Linear(192, 128), nn.SiLU(), nn.Linear(128, 1))

    def forward(self, images: Tensor, input_ids: Tensor) -> Tensor:
        img = self.image(images * 2 - 1)
        txt = self.text(self.token(input_ids) + self.position)
        return self.head(torch.cat([img, txt], dim=1)).squeeze(1)


def tokenize(prompts: list[str]) -> Tensor:
    """Token ids (B, MODEL_MAX_LENGTH) with the ShapesWorld tokenizer."""
    tok = build_tokenizer()
    return tok(prompts, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids


def _random_spec(rng: np.random.Generator, pairs: list[CaptionSpec]) -> CaptionSpec:
    if rng.random() < 0.5:
        return pairs[int(rng.integers(len(pairs)))]
    colour = COLOURS[int(rng.integers(4))] if rng.random() < 0.7 else None
    shape = SHAPES[int(rng.integers(3))] if rng.random() < 0.7 else None
    return CaptionSpec((ObjectSpec(colour, shape),))


#: gold-score gap at or below which the gold annotator calls a pair a tie (tied pairs are redrawn)
TIE_GAP = 0.02


def make_pairs(n: int, seed: int, min_gap: float = TIE_GAP) -> tuple[Tensor, Tensor, list[str], np.ndarray]:
    """``n`` non-tied pairs: images_a, images_b (n, 3, 32, 32) in [0, 1], prompts, gold scores (n, 2).

    A pair whose gold scores differ by at most ``min_gap`` is a tie and is redrawn (0 keeps all).
    """
    from rlsd.shapes.gold import gold_score

    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap}")
    rng = np.random.default_rng([seed, 7])
    pairs = all_two_object_specs()
    imgs, prompts, golds = [], [], []
    while len(prompts) < n:
        spec = _random_spec(rng, pairs)
        prompt = spec_caption(spec)
        row_imgs, row_gold = [], []
        for _side in range(2):
            scene_spec = spec if rng.random() < 0.75 else _random_spec(rng, pairs)
            kinds = DEGRADATIONS if scene_spec.relation is None else DEGRADATIONS[:3]
            deg = kinds[int(rng.integers(len(kinds)))] if rng.random() < 0.5 else None
            img = render(sample_scene(scene_spec, rng, degradation=deg), rng)
            row_imgs.append(img)
            row_gold.append(gold_score(img, prompt)[0])
        if abs(row_gold[0] - row_gold[1]) <= min_gap and min_gap > 0:
            continue
        imgs.append(row_imgs)
        prompts.append(prompt)
        golds.append(row_gold)
    arr = torch.from_numpy(np.asarray(imgs).transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0)
    return arr[:, 0], arr[:, 1], prompts, np.asarray(golds)


@torch.no_grad()
def agreement(model: PreferenceModel, a: Tensor, b: Tensor, prompts: list[str], gold: np.ndarray, margin: float = 0.02) -> float:
    """Share of pairs with |gold_a - gold_b| > margin whose order the model reproduces."""
    ids = tokenize(prompts)
    diff = (model(a, ids) - model(b, ids)).numpy()
    gdiff = gold[:, 0] - gold[:, 1]
    keep = np.abs(gdiff) > margin
    return float(np.mean(np.sign(diff[keep]) == np.sign(gdiff[keep])))


def load_preference_model(folder: str | Path) -> PreferenceModel:
    """Load ``config.json`` + ``model.safetensors`` from ``folder``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"preference model folder {folder} needs config.json and model.safetensors; train it with python -m rlsd.shapes.preference --out {folder}")
    config = json.loads((folder / "config.json").read_text())
    model = PreferenceModel(**config["model"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval()


def train_preference(out: Path, *, steps: int, seed: int, n_train: int, n_eval: int, batch: int, command: str,
                     lr: float = 2e-3, width: int = 32, min_gap: float = TIE_GAP) -> dict:
    """Generate pairs, train with the Bradley-Terry loss, write the folder; returns the manifest.

    AdamW with 5% linear warm-up and cosine decay to zero. Held-out agreement is reported at
    gold margins 0 (every pair), 0.02, 0.05 and 0.1.
    """
    import math

    from safetensors.torch import save_file
    from tqdm import tqdm

    from rlsd.shapes.base_training import sha256_file

    start = time.time()
    a, b, prompts, gold = make_pairs(n_train + n_eval, seed, min_gap)
    ids = tokenize(prompts)
    torch.manual_seed(seed)
    model = PreferenceModel(width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: (k + 1) / warmup if k < warmup else 0.5 * (1 + math.cos(math.pi * (k - warmup) / max(1, steps - warmup))))
    sign = torch.from_numpy(np.sign(gold[:, 0] - gold[:, 1])).float()
    gen = torch.Generator().manual_seed(seed)
    for step in tqdm(range(steps), desc="preference training", mininterval=5):
        idx = torch.randint(0, n_train, (batch,), generator=gen)
        diff = model(a[idx], ids[idx]) - model(b[idx], ids[idx])
        loss = -F.logsigmoid(sign[idx] * diff)[sign[idx] != 0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    held = slice(n_train, n_train + n_eval)
    by_margin = {str(m): agreement(model, a[held], b[held], prompts[held], gold[held], margin=m) for m in (0.0, 0.02, 0.05, 0.1)}
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"model": model.config, "tokenizer": "rlsd.shapes.tokenizer.build_tokenizer"}, indent=2) + "\n")
    manifest = {"command": command, "seed": seed, "steps": steps, "lr": lr, "batch": batch, "n_train_pairs": n_train,
                "n_eval_pairs": n_eval, "tie_gap": min_gap, "heldout_agreement_with_gold": by_margin["0.0"],
                "heldout_agreement_by_gold_margin": by_margin, "final_loss": loss.item(),
                "wall_time_s": round(time.time() - start, 1),
                "sha256": {p: sha256_file(out / p) for p in ("model.safetensors", "config.json")}}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the ShapesWorld preference reward model.")
    parser.add_argument("--out", default="data/shapesworld_preference")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--min-gap", type=float, default=TIE_GAP, help="gold gap of a tie (tied pairs are redrawn)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m rlsd.shapes.preference " + " ".join(argv if argv is not None else sys.argv[1:])
    manifest = train_preference(Path(args.out), steps=args.steps, seed=args.seed, n_train=args.n_train,
                                n_eval=args.n_eval, batch=args.batch, command=command,
                                lr=args.lr, width=args.width, min_gap=args.min_gap)
    print(json.dumps({k: manifest[k] for k in ("heldout_agreement_with_gold", "final_loss", "wall_time_s")}))


if __name__ == "__main__":
    main()
