"""The ShapesWorld study's metrics: per sample, per training seed (paired against the base), and over seeds.

=============================  ===================  ==========================================================
metric                         prompts              what it is
=============================  ===================  ==========================================================
preference proxy               all                  the learned preference score (ImageReward analogue; optimised)
gold quality                   all                  the hidden truth behind the proxy (never optimised)
detection, Eq. 13              unseen compositions  mean best-match confidence of the named objects
count-aware detection          unseen compositions  the same, summed over max(named, detected): extras are misses
exactly the named objects      unseen compositions  share of images whose detections are the named objects, no more
count-aware detection (seen)   seen compositions    the training compositions (learning vs generalising)
SP over drawn objects          colour-open          Eq. 12 over the images that hold an object, per block of seeds
empty share                    colour-open          share of images with no main object (reported apart from SP)
largest colour share           colour-open          the most frequent colour among the drawn objects
=============================  ===================  ==========================================================

Per training seed, base and fine-tuned are paired on the same prompts and seeds (:func:`paired_rows`); over
seeds the change is given as a mean with a 95 % t-interval (:func:`over_seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Metric", "METRICS", "exact_objects", "sample_table", "metric_values", "paired_rows", "over_seeds",
           "mean_ci"]


@dataclass(frozen=True)
class Metric:
    """One row of the study's table."""

    label: str
    prompts: str          # "all", "compositional", "seen_compositional" or "diversity"
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "preference": Metric("preference proxy (≈ ImageReward)", "all", True),
    "gold": Metric("gold quality (never optimised)", "all", True),
    "eq13": Metric("detection, Eq. 13 (unseen)", "compositional", True),
    "count_aware": Metric("count-aware detection (unseen)", "compositional", True),
    "exact": Metric("exactly the named objects (unseen)", "compositional", True),
    "count_aware_seen": Metric("count-aware detection (seen)", "seen_compositional", True),
    "sp_drawn": Metric("SP over drawn objects (≈ Eq. 12)", "diversity", False),
    "empty": Metric("empty share (colour-open)", "diversity", False),
    "top_colour": Metric("largest colour share (drawn)", "diversity", False),
}


def exact_objects(detections: list, prompt: str) -> float:
    """1.0 if the image's detections are exactly the named objects (count, colours and shapes), else 0.0."""
    from rlsd.shapes.grammar import parse
    from rlsd.shapes.match import MAX_DETECTIONS, best_assignment

    spec, detections = parse(prompt), detections[:MAX_DETECTIONS]
    if len(detections) != len(spec.objects):
        return 0.0
    _, assigned = best_assignment(detections, spec)
    return float(all(d is not None and o.colour in (None, d.colour) and o.shape in (None, d.shape)
                     for o, d in zip(spec.objects, assigned)))


def sample_table(result) -> pd.DataFrame:
    """Per-sample table of an :class:`rlsd.evaluation.EvalResult`, with ``exact`` and the colour ``bucket``."""
    from rlsd.rewards.shapes import colour_buckets
    from rlsd.shapes.detector import detect_batch

    table = result.table.copy()
    prompts = table["prompt"].tolist()
    table["exact"] = [exact_objects(d, p) for d, p in zip(detect_batch(result.images), prompts)]
    table["bucket"] = colour_buckets(result.images, prompts)
    return table


def _sp_blocks(buckets: np.ndarray, block: int) -> np.ndarray:
    from rlsd.rewards.parity import statistical_parity
    from rlsd.rewards.shapes import NO_OBJECT
    from rlsd.shapes.grammar import COLOURS

    return np.asarray([statistical_parity(buckets[i:i + block], len(COLOURS), exclude=NO_OBJECT)
                       for i in range(0, len(buckets), block)])


def metric_values(table: pd.DataFrame, key: str, subsets: dict[str, list[str]], block: int) -> np.ndarray:
    """The paired units of metric ``key``: per sample, or per block of ``block`` seeds of a colour-open prompt."""
    rows = table[table["prompt"].isin(subsets[METRICS[key].prompts])]
    column = {"preference": "shapes_preference", "gold": "shapes_gold", "eq13": "shapes_detection",
              "count_aware": "shapes_detection_count_aware", "count_aware_seen": "shapes_detection_count_aware",
              "exact": "exact"}.get(key)
    if column is not None:
        return rows[column].to_numpy(dtype=np.float64)
    out = []
    for _, group in rows.groupby("prompt", sort=False):
        buckets = group["bucket"].to_numpy()
        if len(buckets) % block:
            raise ValueError(f"{len(buckets)} seeds per colour-open prompt do not divide into blocks of {block}")
        if key == "sp_drawn":
            out.append(_sp_blocks(buckets, block))
            continue
        for i in range(0, len(buckets), block):
            b = buckets[i:i + block]
            drawn = b[b >= 0]
            out.append([float(np.mean(b < 0)) if key == "empty" else
                        float(np.bincount(drawn).max() / len(drawn)) if len(drawn) else 1.0])
    return np.concatenate([np.asarray(v, dtype=np.float64) for v in out])


def paired_rows(base: pd.DataFrame, tuned: pd.DataFrame, subsets: dict[str, list[str]], block: int,
                keys: tuple[str, ...] = tuple(METRICS)) -> pd.DataFrame:
    """One row per metric: base, fine-tuned, change, paired SE and one-sided Wilcoxon p (one training seed)."""
    from rlsd.evaluation import paired_test

    rows = []
    for key in keys:
        if not subsets[METRICS[key].prompts]:
            continue
        higher = METRICS[key].higher_is_better
        test = paired_test(metric_values(tuned, key, subsets, block), metric_values(base, key, subsets, block),
                           higher_is_better=higher)
        change = test["mean"] - test["mean_reference"]
        rows.append({"key": key, "metric": METRICS[key].label, "base": test["mean_reference"],
                     "fine-tuned": test["mean"], "change": change, "change SE": test["change_se"],
                     "improved": bool(change > 0 if higher else change < 0), "p": test["p_value"]})
    return pd.DataFrame(rows)


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its two-sided t-interval (0 for a single value)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def over_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Aggregate :func:`paired_rows` of several seeds (column ``seed``): means, change ± 95 % CI, seeds improved."""
    rows = []
    for key, group in per_seed.groupby("key", sort=False):
        change, half = mean_ci(group["change"])
        rows.append({"metric": group["metric"].iloc[0], "base": group["base"].mean(),
                     "fine-tuned": group["fine-tuned"].mean(), "change": change, "95% CI": half,
                     "seeds improved (p<0.05)": f"{int(((group['p'] < 0.05) & group['improved']).sum())}/{len(group)}"})
    return pd.DataFrame(rows)
