"""Tables, claims, figures and ``docs/results.md`` of ``make reproduce``, generated from ``<out>/runs/*.json``.

Every number is a mean over training seeds with a 95 % Student-t confidence half-width (``ci95``; empty with
one seed). Paper table -> file: Table 1 ``table1_preference.csv``, Table 2 ``table2_cost.csv``, Table 3
``table3_fairness.csv``, Table 4 ``table4_composition.csv``, Table 5 ``table5_joint.csv``, ablations
``ablation_*.csv``, curves ``curves.csv``; ``results.json`` holds the provenance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

#: metric key -> (label, higher is better); the keys of :data:`rlsd.study.METRICS` plus Eq. 13 on seen compositions
METRICS = {"preference": ("preference proxy", True), "gold": ("gold quality", True),
           "eq13": ("detection (Eq. 13), unseen", True), "eq13_seen": ("detection (Eq. 13), seen", True),
           "count_aware": ("count-aware detection, unseen", True),
           "count_aware_seen": ("count-aware detection, seen", True), "exact": ("exactly the named objects, unseen", True),
           "sp_drawn": ("SP over drawn objects (lower = fairer)", False), "empty": ("empty share", False),
           "top_colour": ("largest colour share", False)}
TABLES = {
    "table1_preference": (("base", "raft", "rwr", "refl", "draft", "ddpo", "ours"), ("preference", "gold")),
    "table3_fairness": (("base", "raft", "rwr", "ours", "single_diversity", "joint"), ("sp_drawn", "empty", "top_colour")),
    "table4_composition": (("base", "raft", "rwr", "ours", "single_compositional", "joint"),
                           ("eq13", "eq13_seen", "count_aware", "count_aware_seen", "exact")),
    "table5_joint": (("base", "ours", "single_compositional", "single_diversity", "joint"),
                     ("preference", "gold", "eq13", "sp_drawn")),
    "ablation_lpre": (("base", "ours_no_lpre", "ours"), ("preference", "gold")),
    "ablation_normalisation": (("ours", "norm_per_prompt", "norm_group"), ("preference", "gold", "train_auc")),
    "ablation_batch": (("batch_4", "ours", "batch_16"), ("preference", "gold", "train_auc")),
}


def summarize(result, prompts, sp_block: int) -> dict[str, float]:
    """Held-out metrics of one evaluation (``rlsd.evaluation.EvalResult`` on a ``rlsd.protocol.HeldOut``): the
    mean of each :func:`rlsd.study.metric_values` unit (sample, or block of ``sp_block`` seeds)."""
    from rlsd.study import METRICS as STUDY_METRICS
    from rlsd.study import metric_values, sample_table

    table = sample_table(result)
    subsets = {"all": prompts.all, "compositional": prompts.compositional,
               "seen_compositional": prompts.seen_compositional, "diversity": prompts.diversity}
    out = {key: float(np.mean(metric_values(table, key, subsets, sp_block))) if subsets[m.prompts] else math.nan
           for key, m in STUDY_METRICS.items()}
    seen = table[table["prompt"].isin(prompts.seen_compositional)]
    out["eq13_seen"] = float(seen["shapes_detection"].mean()) if len(seen) else math.nan
    return out


def ci95(values) -> tuple[float, float, int]:
    """``(mean, 95 % t half-width, n)`` of the finite ``values`` (half-width NaN when n < 2)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), half, len(v)


def converge_iteration(rewards, fraction: float = 0.9) -> float:
    """First iteration at which the smoothed training reward has made ``fraction`` of its total gain (NaN: no gain)."""
    r = pd.Series(np.asarray(rewards, dtype=float))
    if len(r) < 2:
        return math.nan
    smooth = r.rolling(max(1, len(r) // 5), min_periods=1).mean().to_numpy()
    gain = smooth[-1] - smooth[0]
    if not gain > 0:
        return math.nan
    return float(np.argmax(smooth - smooth[0] >= fraction * gain) + 1)


def load_records(out: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    if not records:
        raise FileNotFoundError(f"{out / 'runs'} holds no results; run python -m rlsd.reproduce first.")
    for rec in records:
        first = [k for k in (rec["curve"][0] if rec["curve"] else {}) if k not in ("iteration", "samples")]
        rewards = [row[first[0]] for row in rec["curve"]] if first else []
        rec["metrics"]["train_auc"] = float(np.mean(rewards)) if rewards else math.nan
        rec["converge_iter"] = converge_iteration(rewards) if rewards else math.nan
        rec["iter_s"] = iteration_seconds(rec)
    return records


def iteration_seconds(record: dict) -> float:
    """Median over iterations of the run's measured sampling + reward + update + L_pre seconds (from its
    ``metrics.csv`` when its run folder still exists, else NaN); the median discounts CPU-contention spikes."""
    run_dir = Path(((record.get("config") or {}).get("log") or {}).get("run_dir", ""))
    if not record.get("config") or not (run_dir / "metrics.csv").is_file():
        return math.nan
    from rlsd.recording import read_metrics

    metrics = read_metrics(run_dir)
    keys = [k for k in ("time/sample_s", "time/reward_s", "time/train_s", "time/pretrain_s") if k in metrics]
    return float(metrics[keys].sum(axis=1).median()) if keys else math.nan


def metric_table(records: list[dict], runs, metrics, labels: dict[str, str]) -> pd.DataFrame:
    """Long table: one row per (run, metric) with mean, ci95 and n over seeds; runs with no record are left out."""
    rows = []
    for run in runs:
        recs = [r for r in records if r["run"] == run]
        for m in metrics:
            if recs:
                mean, half, n = ci95([r["metrics"].get(m, math.nan) for r in recs])
                rows.append({"run": run, "label": labels.get(run, run), "metric": m, "mean": mean, "ci95": half, "n": n})
    return pd.DataFrame(rows, columns=["run", "label", "metric", "mean", "ci95", "n"])


def cost_table(records: list[dict], labels: dict[str, str]) -> pd.DataFrame:
    """Table 2: samples, CPU and wall seconds of training, and the samples / CPU-seconds to 90 % of the gain."""
    rows = []
    trained = {r["run"] for r in records if r["samples"]}
    for run in [r for r in labels if r in trained] + sorted(trained - set(labels)):
        recs = [r for r in records if r["run"] == run]
        iters = [len(r["curve"]) for r in recs]
        per_iter = [r["samples"] / max(n, 1) for r, n in zip(recs, iters)]
        conv = [r["converge_iter"] for r in recs]
        row = {"run": run, "label": labels.get(run, run), "n": len(recs), "iterations": float(np.mean(iters)),
               "samples": ci95([r["samples"] for r in recs])[0], "cpu_s": ci95([r["cpu_s"] for r in recs])[0],
               "wall_s": ci95([r["wall_s"] for r in recs])[0]}
        row["samples_to_90pct"], row["samples_to_90pct_ci95"], _ = ci95([c * p for c, p in zip(conv, per_iter)])
        row["cpu_s_to_90pct"], _, _ = ci95([c / n * r["cpu_s"] for c, n, r in zip(conv, iters, recs)])
        rows.append(row)
    return pd.DataFrame(rows)


def curves_frame(records: list[dict]) -> pd.DataFrame:
    """Long frame of every training curve: run, seed, iteration, samples, task, reward."""
    rows = [{"run": r["run"], "seed": r["seed"], "iteration": c["iteration"], "samples": c["samples"], "task": k,
             "reward": v} for r in records for c in r["curve"] for k, v in c.items() if k not in ("iteration", "samples")]
    return pd.DataFrame(rows, columns=["run", "seed", "iteration", "samples", "task", "reward"])


def fmt(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if not np.isfinite(half) else f"{mean:.3f} ± {half:.3f}"


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run, one 'mean ± ci' column per metric (for markdown and the notebook)."""
    if table.empty:
        return pd.DataFrame()
    table = table.assign(cell=[fmt(m, h) for m, h in zip(table["mean"], table["ci95"])],
                         column=[METRICS.get(m, (m,))[0] if m != "train_auc" else "mean training reward"
                                 for m in table["metric"]])
    out = table.pivot_table(index=["label"], columns="column", values="cell", aggfunc="first", sort=False)
    return out.reindex(columns=list(dict.fromkeys(table["column"]))).reset_index()


def paired(records: list[dict], a: str, b: str, metric: str) -> tuple[float, float, int]:
    """Mean and CI over seeds of ``a - b`` in ``metric``, paired by training seed."""
    by = {(r["run"], r["seed"]): r["metrics"].get(metric, math.nan) for r in records}
    seeds = sorted({s for (run, s) in by if run == a} & {s for (run, s) in by if run == b})
    return ci95([by[(a, s)] - by[(b, s)] for s in seeds])


def verdict(mean: float, half: float, n: int) -> str:
    """'holds' / 'does not hold' from the sign of a paired difference (CI excludes 0), else unresolved."""
    if n == 0 or not np.isfinite(mean):
        return "not run"
    if n < 2:
        return f"{'positive' if mean > 0 else 'not positive'} at 1 seed (no CI: not evidence)"
    if mean - half > 0:
        return "holds"
    if mean + half < 0:
        return "does not hold (the difference is significantly negative)"
    return "not resolved (95 % CI includes 0)"


def markdown_table(table: pd.DataFrame) -> str:
    """GitHub-markdown rendering of ``table`` (floats to 3 decimals; NaN as n/a)."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "n/a" if not np.isfinite(v) else f"{v:.3f}"
        return str(v)

    if table.empty:
        return "(no run of this table in the study)\n"
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
