"""The ShapesWorld evaluation protocol: three disjoint sets, fixed in code, so that no result is tuned to.

=================  ===================================  ==================================================
set                training seeds                       prompts and evaluation seeds
=================  ===================================  ==================================================
``tuning``         :data:`TUNING_TRAIN_SEEDS` (100+)    half of the held-out compositions; eval seeds 50 000+
``test``           :data:`TEST_TRAIN_SEEDS` (0-4)       the other half; eval seeds 10 000+ (never used to tune)
train-time monitor the run's own seed                   :data:`MONITOR_PROMPTS` (``eval.every``), training
                                                        compositions only
=================  ===================================  ==================================================

Every choice of a setting is made on the tuning set; the reported tables and figures come from the
test set, as the mean over the test training seeds with a 95 % confidence interval. The held-out
compositions (:func:`rlsd.prompts.shapes.compositional_prompts` ``("eval")``, never in the pretraining data
nor in RL training) are split in two by a fixed shuffle; the colour-open prompts are shared, with
disjoint seed ranges. ``seen`` compositions (training split) are evaluated too, to tell learning from
generalising (paper Table 4: seen vs unseen).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["SPLITS", "TEST_TRAIN_SEEDS", "TUNING_TRAIN_SEEDS", "MONITOR_PROMPTS", "HeldOut", "heldout_compositions",
           "heldout_prompts", "eval_seeds", "train_seeds"]

SPLITS = ("tuning", "test")
#: training seeds whose runs are reported (the test set)
TEST_TRAIN_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
#: training seeds for every tuning run (never reported as a result)
TUNING_TRAIN_SEEDS: tuple[int, ...] = (100, 101, 102, 103, 104)
#: prompts of the train-time monitor (``eval.prompts``): colour-open and training compositions only
MONITOR_PROMPTS: tuple[str, ...] = ("a circle", "a shape", "a blue triangle", "a red circle above a green square",
                                    "a green circle left of a blue square")
#: first evaluation seed of each split: compositional prompts share one range, each colour-open prompt has its own
_SEED_START = {"test": (10_000, 20_000), "tuning": (50_000, 60_000)}
#: the fixed shuffle that splits the held-out compositions into tuning and test halves
_SPLIT_SHUFFLE_SEED = 2401_12244


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def heldout_compositions(split: str) -> list[str]:
    """The held-out two-object captions of ``split`` (tuning or test half; disjoint, fixed)."""
    from rlsd.prompts.shapes import compositional_prompts

    pool = sorted(compositional_prompts("eval"))
    random.Random(_SPLIT_SHUFFLE_SEED).shuffle(pool)
    half = len(pool) // 2
    return pool[:half] if _check_split(split) == "tuning" else pool[half:]


@dataclass
class HeldOut:
    """Evaluation prompts by the task they probe: colour-open, unseen compositions, seen compositions."""

    diversity: list[str]
    compositional: list[str]
    seen_compositional: list[str]

    @property
    def all(self) -> list[str]:
        return self.diversity + self.compositional + self.seen_compositional


def _choose(pool: list[str], num: int, seed: int, name: str, which: str) -> list[str]:
    if not 0 <= num <= len(pool):
        raise ValueError(f"{name} must be in 0..{len(pool)} ({which} compositions), got {num}")
    return random.Random(seed).sample(pool, num)


def heldout_prompts(split: str, num_compositional: int, num_seen: int = 0, seed: int = 0) -> HeldOut:
    """Colour-open prompts, ``num_compositional`` unseen compositions of ``split`` and ``num_seen`` training ones.

    ``seed`` (the training seed) fixes the choice, so each training seed is judged on its own sample of the split.
    """
    from rlsd.prompts.shapes import UNDERSPECIFIED_PROMPTS, compositional_prompts

    unseen = _choose(heldout_compositions(split), num_compositional, seed, "num_compositional", f"{split} held-out")
    seen = _choose(sorted(compositional_prompts("train")), num_seen, seed, "num_seen", "training")
    return HeldOut(list(UNDERSPECIFIED_PROMPTS), unseen, seen)


def eval_seeds(split: str, prompts: HeldOut, num_seeds: int, num_diversity_seeds: int) -> dict[str, list[int]]:
    """``{prompt: seeds}`` of ``split``: one range shared by the compositional prompts, one per colour-open prompt.

    The colour-open captions barely steer the base model beyond the colour prior, so on shared seeds "a circle"
    and "a square" would give near-copies and their parity blocks would not be independent. The tuning and test
    ranges are disjoint, and both lie outside the training sample streams (those are drawn from
    :func:`rlsd.distributed.rank_generator`, not from a seed per sample).
    """
    if min(num_seeds, num_diversity_seeds) < 1:
        raise ValueError(f"num_seeds and num_diversity_seeds must be >= 1, got {num_seeds}, {num_diversity_seeds}")
    shared_start, diversity_start = _SEED_START[_check_split(split)]
    if max(num_seeds, len(prompts.diversity) * num_diversity_seeds) > 10_000:
        raise ValueError("at most 10000 evaluation seeds per range; lower num_seeds or num_diversity_seeds")
    shared = list(range(shared_start, shared_start + num_seeds))
    seeds = {p: shared for p in prompts.compositional + prompts.seen_compositional}
    for i, p in enumerate(prompts.diversity):
        start = diversity_start + i * num_diversity_seeds
        seeds[p] = list(range(start, start + num_diversity_seeds))
    return seeds


def train_seeds(spec: str) -> list[int]:
    """Parse a seed list such as ``"0-4"``, ``"0,2,3"`` or ``"100-102,105"`` into ints."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ValueError(f"--seeds must look like 0-4 or 0,2,3, got {spec!r}") from None
    if not out or len(set(out)) != len(out):
        raise ValueError(f"--seeds must name distinct seeds, got {spec!r}")
    return out
