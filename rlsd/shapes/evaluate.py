"""ShapesWorld evaluation table: proxy preference, gold, detection, colour parity, win-rate vs base.

``evaluate(model, prompts, seeds)`` samples every (prompt, seed) pair with the generator seeded
by ``seed`` (via :func:`rlsd.evaluation.evaluate`, so two models see the same initial noise),
scores it with the ShapesWorld rewards and returns a per-prompt table::

    prompt | n | shapes_preference | shapes_gold | shapes_detection | statistical_parity
           | share_red | share_green | share_blue | share_yellow | share_none
           | [win_rate/<reward> vs reference]

``statistical_parity`` is SP of the main-object colours over the seeds of the prompt
(``-shapes_color_parity``). With ``reference`` (the ``EvalResult`` of the base model on the same
prompts and seeds) win-rates are added per reward (ties count 1/2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rlsd.shapes.grammar import COLOURS

__all__ = ["DEFAULT_REWARDS", "build_rewards", "evaluate", "per_prompt_table", "shipped_guidance_scale", "parity_per_block"]

DEFAULT_REWARDS: tuple[str, ...] = ("shapes_preference", "shapes_gold", "shapes_detection", "shapes_color_parity")


def build_rewards(names: tuple[str, ...] | list[str] = DEFAULT_REWARDS) -> dict[str, Any]:
    """``{name: Reward}`` built through the reward registry."""
    from rlsd.rewards import build_reward

    return {name: build_reward(name) for name in names}


def shipped_guidance_scale(folder: str = "data/shapesworld_base") -> float:
    """The CFG scale recorded in ``<folder>/MANIFEST.json`` (chosen by a sweep, see its ``guidance_scale_note``)."""
    import json
    from pathlib import Path

    path = Path(folder) / "MANIFEST.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; train the base model with python -m rlsd.shapes.base_training --out {folder}")
    return float(json.loads(path.read_text())["guidance_scale"])


def parity_per_block(images, prompts: list[str], block: int) -> np.ndarray:
    """Statistical parity of the main-object colours over consecutive blocks of ``block`` samples.

    ``images``/``prompts`` in :class:`rlsd.evaluation.EvalResult` order (prompt-major, then seed);
    every block must hold one prompt, so ``block`` must divide the number of seeds per prompt. Two
    models evaluated on the same prompts and seeds give paired blocks (the unit of a paired test of SP).
    """
    from rlsd.rewards.parity import statistical_parity
    from rlsd.rewards.shapes import NO_OBJECT, colour_buckets

    if block < 1 or len(prompts) % block:
        raise ValueError(f"block={block} must be >= 1 and divide the {len(prompts)} samples")
    starts = range(0, len(prompts), block)
    if any(len(set(prompts[i:i + block])) != 1 for i in starts):
        raise ValueError(f"a block of {block} samples spans two prompts; choose a block that divides the seeds per prompt")
    buckets = colour_buckets(images, list(prompts))
    return np.asarray([statistical_parity(buckets[i:i + block], len(COLOURS), exclude=NO_OBJECT) for i in starts])


def per_prompt_table(table: pd.DataFrame, images, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Aggregate a per-sample table (rows = (prompt, seed)) into one row per prompt."""
    from rlsd.evaluation import win_rate
    from rlsd.rewards.shapes import colour_buckets

    table = table.copy()
    table["bucket"] = colour_buckets(images, table["prompt"].tolist())
    reward_cols = [c for c in table.columns if c.startswith("shapes_") and c != "shapes_color_parity"]
    rows = []
    for prompt, group in table.groupby("prompt", sort=False):
        row = {"prompt": prompt, "n": len(group), **{c: float(group[c].mean()) for c in reward_cols}}
        if "shapes_color_parity" in group:
            row["statistical_parity"] = float(-group["shapes_color_parity"].iloc[0])
        counts = np.bincount(group["bucket"].to_numpy() + 1, minlength=len(COLOURS) + 1) / len(group)
        row.update({f"share_{c}": float(counts[i + 1]) for i, c in enumerate(COLOURS)}, share_none=float(counts[0]))
        if reference is not None:
            ref = reference.set_index(["prompt", "seed"]).loc[[(prompt, s) for s in group["seed"]]]
            for c in reward_cols:
                row[f"win_rate/{c}"] = win_rate(group[c].to_numpy(), ref[c].to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(model: Any, prompts: list[str], seeds: list[int] | dict[str, list[int]], rewards: dict[str, Any] | None = None, *,
             reference: pd.DataFrame | None = None, num_steps: int = 50, guidance_scale: float = 5.0,
             eta: float = 1.0, batch_size: int = 32):
    """Sample, score and aggregate; returns ``(per_prompt_table, EvalResult)``.

    Args:
        model: ``T2IModel`` (e.g. ``rlsd.models.load_model("data/shapesworld_base")``).
        prompts, seeds: P prompts x S seeds, or ``{prompt: seeds}``; the seeds fix the initial noise of
            each sample.
        rewards: ``{name: Reward}``; default :data:`DEFAULT_REWARDS`.
        reference: per-sample ``EvalResult.table`` of the base model on the same prompts/seeds.
    """
    from rlsd.evaluation import evaluate as sample_and_score

    result = sample_and_score(model, prompts, seeds, rewards or build_rewards(), num_steps=num_steps,
                              guidance_scale=guidance_scale, eta=eta, batch_size=batch_size)
    return per_prompt_table(result.table, result.images, reference), result
