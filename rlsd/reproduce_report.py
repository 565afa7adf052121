"""The claims checked by ``make reproduce``, its figures, the CSV/JSON files and ``docs/results.md``.

Everything here reads ``<out>/runs/*.json`` (written by :mod:`rlsd.reproduce`); nothing trains.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from rlsd.reproduce_tables import (TABLES, ci95, cost_table, curves_frame, fmt, load_records, markdown_table,
                                   metric_table, paired, verdict, wide)

#: Table 5: the single-task run each metric is compared with
SINGLE_TASK = {"preference": "ours", "eq13": "single_compositional", "sp_drawn": "single_diversity"}


def claims(records: list[dict]) -> list[dict]:
    """The issue's five claims, each with its numbers and a verdict from paired differences over seeds."""
    out = []
    for other in ("raft", "rwr", "refl"):
        m, h, n = paired(records, "ours", other, "gold")
        name = {"raft": "RAFT", "rwr": "RWR", "refl": "ReFL"}[other]
        out.append({"claim": f"RL beats {name} on gold", "measure": f"gold(ours) - gold({other})",
                    "value": fmt(m, h), "n": n, "verdict": verdict(m, h, n)})
    dp, hp, n_p = paired(records, "refl", "base", "preference")
    dg, hg, n_g = paired(records, "refl", "base", "gold")
    both = verdict(dp, hp, n_p), verdict(-dg, hg, n_g)
    joined = "holds" if both == ("holds", "holds") else f"proxy rise: {both[0]}; gold fall: {both[1]}"
    out.append({"claim": "ReFL raises the proxy while gold falls", "measure": "ReFL - base: proxy / gold",
                "value": f"{fmt(dp, hp)} / {fmt(dg, hg)}", "n": min(n_p, n_g), "verdict": joined})
    ratios = _joint_ratios(records)
    finite = [r for r in ratios.values() if np.isfinite(r)]
    runs = {r["run"] for r in records}
    if not {"base", "joint", *SINGLE_TASK.values()} <= runs:
        kept = "not run (needs base, joint and the three single-task runs)"
    elif len(finite) < len(ratios):
        kept = "undefined (a single-task run made no gain on " + ", ".join(k for k, v in ratios.items() if not np.isfinite(v)) + ")"
    else:
        kept = "holds" if min(finite) >= 0.8 else "does not hold"
    out.append({"claim": "Joint keeps at least 80 % of the single-task gains", "measure": "(joint - base) / (single - base)",
                "value": ", ".join(f"{k}: {v:.2f}" for k, v in ratios.items()), "n": _n(records, "joint"),
                "verdict": kept + (" (means over seeds; no CI)" if len(finite) == len(ratios) else "")})
    m, h, n = paired(records, "ours", "ours_no_lpre", "gold")
    out.append({"claim": "Removing L_pre hurts gold", "measure": "gold(ours) - gold(ours without L_pre)",
                "value": fmt(m, h), "n": n, "verdict": verdict(m, h, n)})
    m, h, n = paired(records, "ours", "norm_per_prompt", "train_auc")
    v = verdict(m + 1e-12, h, n) if n else "not run"
    out.append({"claim": "Global normalisation is at least as sample-efficient as per-prompt",
                "measure": "mean training reward, global - per-prompt (same samples)", "value": fmt(m, h), "n": n,
                "verdict": v if not v.startswith("not resolved") else "holds in the 'at least as' sense: " + v})
    return out


def _n(records: list[dict], run: str) -> int:
    return sum(r["run"] == run for r in records)


def _joint_ratios(records: list[dict]) -> dict[str, float]:
    """Per metric: the joint run's gain over base as a share of its single-task run's gain (means over seeds;
    for SP, lower is better, so gains are falls and the ratio is the same)."""
    def mean(run: str, metric: str) -> float:
        return ci95([r["metrics"].get(metric, math.nan) for r in records if r["run"] == run])[0]

    out = {}
    for metric, single in SINGLE_TASK.items():
        base, joint, alone = mean("base", metric), mean("joint", metric), mean(single, metric)
        gain = alone - base
        out[metric] = (joint - base) / gain if np.isfinite(gain) and gain != 0 and np.isfinite(joint) else math.nan
    return out


def reward_vs_samples_figure(curves: pd.DataFrame, runs: list[str], labels: dict[str, str], title: str):
    """Mean training reward (first task) vs samples seen, one line per run with a 95 % CI band over seeds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for run in runs:
        sub = curves[curves["run"] == run]
        if sub.empty:
            continue
        sub = sub[sub["task"] == sub["task"].iloc[0]]
        stats = [(s, *ci95(g["reward"])) for s, g in sub.groupby("samples")]
        x, mean, half = (np.asarray(v, dtype=float) for v in zip(*[(s, m, h) for s, m, h, _ in stats]))
        ax.plot(x, mean, label=labels.get(run, run), marker="o" if len(x) < 6 else None, ms=3)
        if np.isfinite(half).any():
            ax.fill_between(x, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel("samples")
    ax.set_ylabel("training reward (proxy)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES = {"reward_vs_samples_methods": ("ours", "raft", "rwr", "refl", "draft", "ddpo"),
           "reward_vs_samples_normalisation": ("ours", "norm_per_prompt", "norm_group"),
           "reward_vs_samples_batch": ("batch_4", "ours", "batch_16")}


def study_label(records: list[dict]) -> str:
    """'reduced (...)' unless every run has >= 3 seeds and the presets' 25 iterations."""
    seeds = {r["seed"] for r in records}
    iters = {len(r["curve"]) for r in records if r["curve"]}
    label = next((r["study_label"] for r in records if r.get("study_label")), "")
    full = len(seeds) >= 3 and iters == {25}
    what = f"{len(seeds)} seed(s), {sorted(iters)} iterations, {records[0]['eval']['num_samples']} evaluation samples"
    return f"{label or ('full' if full else 'reduced')}: {what}" if label or not full else f"full: {what}"


def write_report(out: Path, docs: Path, *, command: str, plan, report_only: bool = False) -> None:
    """Write every CSV, ``results.json``, the figures and ``docs`` (markdown) from ``<out>/runs``.

    With ``report_only`` the study's command is kept from an existing ``results.json`` (the runs were made by it)
    and ``command`` is recorded as the one that regenerated the report.
    """
    from rlsd.recording import _git, save_figure

    previous = out / "results.json"
    report_command = command
    if report_only and previous.is_file():
        command = json.loads(previous.read_text()).get("command", command)

    records = load_records(out)
    labels = {spec.name: spec.label for spec in plan}
    tables = {name: metric_table(records, runs, metrics, labels) for name, (runs, metrics) in TABLES.items()}
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    cost = cost_table(records, labels)
    cost.to_csv(out / "table2_cost.csv", index=False)
    curves = curves_frame(records)
    curves.to_csv(out / "curves.csv", index=False)
    claim_rows = claims(records)
    pd.DataFrame(claim_rows).to_csv(out / "claims.csv", index=False)
    label = study_label(records)
    for name, runs in FIGURES.items():
        fig = reward_vs_samples_figure(curves, list(runs), labels, name.replace("_", " "))
        save_figure(fig, name, params={"runs": list(runs), "study": label}, data_source=str(out / "curves.csv"),
                    out_dir=out / "figures")
    commit = _git(["rev-parse", "HEAD"], Path.cwd()) or "unknown"
    provenance = {"study": label, "git_commit": commit, "command": command, "report_command": report_command,
                  "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "seeds": sorted({r["seed"] for r in records}), "eval": records[0]["eval"],
                  "runs": {f"{r['run']}__seed{r['seed']}": {"command": r["command"], "config_file": r["config_file"],
                                                             "overrides": r["overrides"], "git_commit": r.get("git_commit")}
                           for r in records}}
    (out / "results.json").write_text(json.dumps(provenance, indent=1) + "\n")
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(markdown(records, tables, cost, claim_rows, provenance, out))


def expected_cost(records: list[dict], seeds: int = 3, iterations: int = 25, steps_ratio: float = 1.0,
                  eval_ratio: float = 1.0, startup_s: float = 20.0) -> float:
    """Minutes of the study at ``seeds`` x ``iterations`` on one free core (an upper estimate).

    Seconds per iteration: the smaller of the median measured iteration time
    (:func:`rlsd.reproduce_tables.iteration_seconds`, wall: inflated by other processes) and the run's CPU seconds
    per iteration (start-up included: inflated for short runs), x ``steps_ratio`` (DDIM steps; the update part does
    not grow with them), plus ``startup_s`` per run; evaluation: the median measured evaluation time x
    ``eval_ratio`` (samples) x ``steps_ratio``. NaN when a run's timings are missing.
    """
    eval_s = float(np.median([r["eval_s"] for r in records])) * eval_ratio * steps_ratio
    total = 0.0
    for run in dict.fromkeys(r["run"] for r in records):
        recs = [r for r in records if r["run"] == run]
        if recs[0]["curve"]:
            per_iter = np.mean([min(r["iter_s"], r["cpu_s"] / len(r["curve"])) for r in recs])
            total += (per_iter * iterations * steps_ratio + startup_s) * seeds
        total += eval_s * seeds
    return total / 60


def markdown(records, tables, cost, claim_rows, provenance, out: Path) -> str:
    """``docs/results.md``: provenance, every table, the claims and the figures (generated; never edit by hand)."""
    lines = ["# ShapesWorld reproduction of the paper's comparisons (generated by `python -m rlsd.reproduce`)", "",
             "Do not edit: `python -m rlsd.reproduce --report-only` regenerates this file from "
             f"`{out}/runs/*.json`.", "", f"**Study: {provenance['study']}.**", "",
             f"- command: `{provenance['command']}` (report written by `{provenance['report_command']}`)",
             f"- git commit of the report: `{provenance['git_commit']}`; of "
             f"the runs: {sorted({str(r.get('git_commit')) for r in records})}",
             f"- training seeds (TEST set of `rlsd.protocol`): {provenance['seeds']}",
             f"- evaluation: {json.dumps(provenance['eval'])}",
             "- every cell: mean ± 95 % t-interval half-width over training seeds (a bare number: one seed, no CI)", ""]
    if "reduced" in provenance["study"]:
        lines += ["> This is a reduced run: it checks that the pipeline works end to end. Its numbers are not evidence "
                  "for or against any claim.", ""]
    steps = records[0]["eval"]["num_steps"]
    full_eval = 2 * 8 * 8 + 4 * 16  # the defaults: 8 unseen + 8 seen compositions x 8 seeds, 4 colour-open x 16
    minutes = expected_cost(records, steps_ratio=20 / steps, eval_ratio=full_eval / records[0]["eval"]["num_samples"])
    lines += [f"Expected cost of the full study (`make reproduce`: 3 seeds x 25 iterations, 20 DDIM steps, default "
              f"evaluation), extrapolated from this study's measured median seconds per iteration and evaluation "
              f"times: {minutes:.0f} minutes on one free core, an upper estimate (n/a when the run folders are gone; `rlsd.reproduce_report.expected_cost` says how it is made).", ""]
    titles = {"table1_preference": "Table 1 analogue: preference proxy and gold",
              "table3_fairness": "Table 3 analogue: statistical parity over drawn objects, and the empty share",
              "table4_composition": "Table 4 analogue: detection on seen and unseen compositions",
              "table5_joint": "Table 5 analogue: single-task vs joint",
              "ablation_lpre": "Ablation: without L_pre vs with it (paper Fig. 29)",
              "ablation_normalisation": "Ablation: global-batch vs per-prompt vs group normalisation",
              "ablation_batch": "Ablation: samples per iteration"}
    for name, title in titles.items():
        lines += [f"## {title}", "", markdown_table(wide(tables[name])), ""]
    lines += ["## Table 2 analogue: cost (training only)", ""]
    if not cost.empty:
        show = cost[["label", "n", "iterations", "samples", "cpu_s", "samples_to_90pct", "cpu_s_to_90pct"]]
        lines += [markdown_table(show.rename(columns={"samples_to_90pct": "samples to 90 % of gain",
                                                      "cpu_s_to_90pct": "CPU s to 90 % of gain"})), ""]
    lines += ["## Claims", "", markdown_table(pd.DataFrame(claim_rows)), "",
              "## Figures", ""]
    lines += [f"![{name}]({Path('..') / out / 'figures' / (name + '.png')})" for name in FIGURES]
    lines += ["", "Before/after grids (same evaluation seeds for every run, first training seed): "
              + ", ".join(f"[{p.stem}]({Path('..') / out / 'grids' / p.name})" for p in sorted((out / 'grids').glob('*.png'))), ""]
    return "\n".join(lines)


def grids_figure(grid_dir: Path, runs: list[str], labels: dict[str, str]):
    """The before/after grids of ``runs`` (``<out>/grids/<run>.png``, same evaluation seeds) side by side."""
    import matplotlib.pyplot as plt
    from PIL import Image

    found = [r for r in runs if (Path(grid_dir) / f"{r}.png").is_file()]
    if not found:
        raise FileNotFoundError(f"{grid_dir} holds none of the grids {runs}; run python -m rlsd.reproduce first.")
    ncols = min(5, len(found))
    nrows = -(-len(found) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, run in zip(axes.flat, found):
        ax.imshow(Image.open(Path(grid_dir) / f"{run}.png"))
        ax.set_title(labels.get(run, run), fontsize=8)
    fig.tight_layout()
    return fig


def table_for_display(results_dir: Path, name: str):
    """``<results_dir>/<name>.csv`` as one row per run with 'mean ± ci95' cells (Table 2 and claims as written)."""
    frame = pd.read_csv(Path(results_dir) / f"{name}.csv")
    return frame if name in ("table2_cost", "claims") else wide(frame)
