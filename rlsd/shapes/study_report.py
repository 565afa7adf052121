"""The ShapesWorld study's report: results table (markdown + CSV), figures, and the README's results block.

Everything here is computed from the per-seed paired table of :func:`rlsd.demo.main`; nothing is typed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["write_report", "markdown_table", "joint_vs_single", "replace_block"]

README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-markdown rendering of ``table`` with floats to 3 decimals."""
    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return f"{v:.1e}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def joint_vs_single(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 5: each task's metrics, changed by the task alone vs jointly, and the share the joint run keeps."""
    from rlsd.demo import SINGLE_TASK_CONFIGS
    from rlsd.study import METRICS, mean_ci

    rows = []
    for task, (_, keys) in SINGLE_TASK_CONFIGS.items():
        for key in keys:
            single = per_seed[(per_seed["run"] == task) & (per_seed["key"] == key)]["change"]
            joint = per_seed[(per_seed["run"] == "joint") & (per_seed["key"] == key)]["change"]
            if single.empty or joint.empty:
                continue
            (s, s_ci), (j, j_ci) = mean_ci(single), mean_ci(joint)
            rows.append({"task": task, "metric": METRICS[key].label, "alone: change": s, "alone: 95% CI": s_ci,
                         "joint: change": j, "joint: 95% CI": j_ci, "joint keeps": f"{j / s:.0%}" if s else "n/a"})
    return pd.DataFrame(rows)


def _reading(table: pd.DataFrame) -> list[str]:
    """One line per metric: does the 95 % CI of the change exclude zero, and in which direction."""
    from rlsd.study import METRICS

    lines = []
    for key, row in table.iterrows():
        better = (row["change"] > 0) == METRICS[key].higher_is_better
        verdict = ("better" if better else "worse") if abs(row["change"]) > row["95% CI"] else "no clear change"
        lines.append(f"- {row['metric']}: {row['base']:.3f} -> {row['fine-tuned']:.3f} "
                     f"({row['change']:+.3f} ± {row['95% CI']:.3f}): **{verdict}**")
    return lines


def replace_block(path: Path, text: str) -> None:
    """Replace the text between the README's results markers with ``text``."""
    content = path.read_text()
    if README_BEGIN not in content or README_END not in content:
        raise ValueError(f"{path} has no {README_BEGIN} ... {README_END} block to write the results into")
    head, rest = content.split(README_BEGIN, 1)
    path.write_text(f"{head}{README_BEGIN}\n{text}\n{README_END}{rest.split(README_END, 1)[1]}")


def _report_text(per_seed: pd.DataFrame, provenance: dict) -> tuple[str, str, pd.DataFrame]:
    """``(full report, its short README form: heading and tables, no reading or per-seed p, summary)``."""
    from rlsd.study import over_seeds

    joint = per_seed[per_seed["run"] == "joint"]
    summary = over_seeds(joint)
    keyed = summary.set_index(joint["key"].drop_duplicates().to_numpy())
    seeds = provenance["seeds"]
    parts = [f"Joint RL on ShapesWorld, {provenance['split']} set, training seeds {seeds} "
             f"(`{provenance['command']}`). Change = fine-tuned − base, mean over seeds with a 95 % t-interval; "
             "per seed, base and fine-tuned are paired on the same prompts and seeds (one-sided Wilcoxon).\n",
             markdown_table(summary)]
    table5 = joint_vs_single(per_seed)
    if not table5.empty:
        single_seeds = provenance.get("single_task_seeds", seeds)
        parts += [f"\nEach task alone (training seeds {single_seeds}) vs jointly (paper Table 5):\n",
                  markdown_table(table5)]
    short = "\n".join(parts)
    parts.insert(2, "\n".join(_reading(keyed)) + "\n")
    wide = joint.pivot_table(index="metric", columns="seed", values="p", sort=False)
    wide.columns = [f"p, seed {s}" for s in wide.columns]
    parts += ["\nPer-seed one-sided Wilcoxon p of the joint run:\n", markdown_table(wide.reset_index())]
    return "\n".join(parts), short, summary


def _figures(per_seed: pd.DataFrame, samples: dict, base, first, prompts, out: Path, figures: Path,
             provenance: dict) -> list[Path]:
    import matplotlib.pyplot as plt

    from rlsd.plotting import before_after_grid
    from rlsd.recording import read_metrics, save_figure
    from rlsd.shapes.study_plots import colour_shares, colour_shares_figure, detection_figure, seed_curves_figure

    seeds, source = provenance["seeds"], provenance["command"]
    saved = []
    save = lambda fig, name: saved.append(save_figure(fig, name, params=provenance, data_source=source,  # noqa: E731
                                                      out_dir=figures)["png"])
    tuned = {s: samples[f"joint/seed{s}"] for s in seeds}
    shares = {"base": np.stack([colour_shares(base[0], prompts.diversity)] * len(seeds)),
              "fine-tuned": np.stack([colour_shares(tuned[s], prompts.diversity) for s in seeds])}
    save(colour_shares_figure(shares, len(seeds)), "demo_colour_histogram")
    names = {"eq13": "Eq. 13", "count_aware": "count-aware", "exact": "exact objects"}
    joint = per_seed[per_seed["run"] == "joint"]
    det = {label: np.stack([[joint[(joint["seed"] == s) & (joint["key"] == k)][col].item() for k in names]
                            for s in seeds]) for label, col in (("base", "base"), ("fine-tuned", "fine-tuned"))}
    save(detection_figure(det, list(names.values()), len(seeds)), "demo_detection")
    curves = {}
    for s in seeds:
        metrics = read_metrics(out / "joint" / f"seed{s}" / "run")
        for col in (c for c in metrics.columns if c.startswith("reward/") and c.endswith("/mean")):
            series = metrics[col].dropna()
            curves.setdefault(col.split("/")[1], {})[s] = pd.Series(series.to_numpy(), index=series.index - 1)
    save(seed_curves_figure({t: pd.DataFrame(v) for t, v in curves.items()}, {}), "demo_reward_curves")
    prompt_col = base[1].table["prompt"].to_numpy()
    for name, chosen in (("compositional", prompts.compositional[:4]), ("diversity", prompts.diversity)):
        rows = [int(r) for p in chosen for r in (prompt_col == p).nonzero()[0][:2]]  # first 2 seeds of each prompt
        fig = before_after_grid(base[1].images[rows], first.images[rows], [prompt_col[r] for r in rows],
                                labels=("base", f"fine-tuned (seed {seeds[0]})"))
        save(fig, f"demo_before_after_{name}")
    plt.close("all")
    return saved


def write_report(per_seed: pd.DataFrame, provenance: dict, base, first, prompts, out: Path, figures: Path,
                 readme: str = "") -> list[Path]:
    """Write ``<figures>/demo_results.md`` / ``.csv``, the figures and (if ``readme``) its results block."""
    samples = {m: t for m, t in pd.read_csv(out / "samples.csv").groupby("model")}
    text, short, summary = _report_text(per_seed, provenance)
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "demo_results.md").write_text(text)
    summary.to_csv(figures / "demo_results.csv", index=False)
    written = [figures / "demo_results.md", figures / "demo_results.csv"]
    written += _figures(per_seed, samples, base, first, prompts, out, figures, provenance)
    if readme:
        replace_block(Path(readme), f"{short}\nThe reading of each row and the per-seed p: `{figures}/demo_results.md`.")
        written.append(Path(readme))
    print(text)
    return written
