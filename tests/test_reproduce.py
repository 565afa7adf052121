"""make reproduce (rlsd.reproduce): the statistics and claims on known values, the refusals, and (slow) a reduced
study end to end: every table, the provenance, the report, and no retraining of a finished run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from rlsd.reproduce import main
from rlsd.reproduce_report import claims
from rlsd.reproduce_tables import ci95, converge_iteration, metric_table, verdict

REPO = Path(__file__).resolve().parents[1]


def test_ci95_is_the_t_interval() -> None:
    mean, half, n = ci95([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    mean, half, n = ci95([5.0, float("nan")])
    assert (mean, n) == (5.0, 1) and math.isnan(half)


def test_converge_iteration() -> None:
    assert converge_iteration([0, 0, 0, 0, 0, 10, 10, 10, 10, 10]) == 7  # window 2: 0,..,5,10 -> 90 % at index 6
    assert math.isnan(converge_iteration([3.0, 2.0, 1.0]))  # no gain, no convergence


def test_verdicts() -> None:
    assert verdict(1.0, 0.5, 3) == "holds"
    assert verdict(-1.0, 0.5, 3).startswith("does not hold")
    assert verdict(0.1, 0.5, 3).startswith("not resolved")
    assert "not evidence" in verdict(0.1, math.nan, 1)
    assert verdict(math.nan, math.nan, 0) == "not run"


def _record(run: str, seed: int, **metrics: float) -> dict:
    return {"run": run, "seed": seed, "metrics": metrics, "curve": [], "samples": 0}


def test_claims_from_known_numbers() -> None:
    records = []
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        records += [_record("base", seed, gold=0.50, preference=5.0, eq13=0.60, sp_drawn=0.70),
                    _record("ours", seed, gold=0.60 + noise, preference=6.0, eq13=0.61, sp_drawn=0.69),
                    _record("raft", seed, gold=0.55, preference=5.5),
                    _record("refl", seed, gold=0.45 + noise, preference=7.0 + noise),
                    _record("single_compositional", seed, eq13=0.70, sp_drawn=0.70, gold=0.5, preference=5.0),
                    _record("single_diversity", seed, eq13=0.60, sp_drawn=0.50, gold=0.5, preference=5.0),
                    _record("joint", seed, preference=5.9, eq13=0.69, sp_drawn=0.53, gold=0.55)]
    rows = {c["claim"]: c for c in claims(records)}
    assert rows["RL beats RAFT on gold"]["verdict"] == "holds"
    assert rows["RL beats RWR on gold"]["verdict"] == "not run"
    assert rows["ReFL raises the proxy while gold falls"]["verdict"] == "holds"
    joint = rows["Joint keeps at least 80 % of the single-task gains"]
    assert joint["verdict"].startswith("holds") and "preference: 0.90" in joint["value"] and "sp_drawn: 0.85" in joint["value"]
    table = metric_table(records, ("base", "ours", "rwr"), ("gold",), {"ours": "ours"})
    assert list(table["run"]) == ["base", "ours"] and table["n"].tolist() == [3, 3]


def test_refuses_tuning_seeds(capsys) -> None:
    assert main(["--seeds", "100", "--report-only"]) == 2
    assert "TEST training seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_reduced_study_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    out, docs = tmp_path / "results", tmp_path / "results.md"
    args = ["--runs", "base,ours,raft,refl", "--seeds", "0", "--iterations", "2", "--num-steps", "4",
            "--num-compositional", "2", "--eval-seeds", "2", "--diversity-seeds", "8", "--out", str(out),
            "--work", str(tmp_path / "work"), "--docs", str(docs), "--label", "reduced"]
    assert main(args) == 0
    for name in ("table1_preference", "table2_cost", "table3_fairness", "table4_composition", "table5_joint",
                 "ablation_lpre", "ablation_normalisation", "ablation_batch", "curves", "claims"):
        assert (out / f"{name}.csv").is_file(), name
    table1 = pd.read_csv(out / "table1_preference.csv")
    assert set(table1["run"]) == {"base", "ours", "raft", "refl"} and table1["mean"].notna().all()
    cost = pd.read_csv(out / "table2_cost.csv").set_index("run")
    assert cost.loc["raft", "samples"] == 2 * 24 and cost.loc["ours", "samples"] == 2 * 8 and (cost["cpu_s"] > 0).all()
    provenance = json.loads((out / "results.json").read_text())
    assert provenance["seeds"] == [0] and provenance["study"].startswith("reduced") and len(provenance["git_commit"]) >= 7
    assert "rlsd.train --config configs/shapes_raft.yaml" in provenance["runs"]["raft__seed0"]["command"]
    record = json.loads((out / "runs" / "raft__seed0.json").read_text())
    assert record["config"]["train"]["method"] == "raft" and len(record["curve"]) == 2
    assert (out / "grids" / "base.png").is_file() and (out / "figures" / "reward_vs_samples_methods.png").is_file()
    text = docs.read_text()
    assert "reduced run" in text and "Table 1 analogue" in text and "RL beats RAFT on gold" in text
    stamp = (out / "runs" / "raft__seed0.json").stat().st_mtime
    assert main(args) == 0  # finished runs are not trained again; the report is regenerated
    assert (out / "runs" / "raft__seed0.json").stat().st_mtime == stamp


def test_a_record_of_other_settings_is_not_finished(tmp_path: Path, monkeypatch) -> None:
    from rlsd.reproduce import RUNS, finished, parse_args

    monkeypatch.chdir(REPO)
    args = parse_args(["--iterations", "2", "--num-steps", "4", "--eval-seeds", "2"])
    path = tmp_path / "ours__seed0.json"
    evals = {"num_compositional": 8, "eval_seeds": 2, "diversity_seeds": 16, "num_steps": 4}
    path.write_text(json.dumps({"eval": evals, "curve": [{}, {}]}))
    assert finished(path, RUNS["ours"], 0, args)
    path.write_text(json.dumps({"eval": {**evals, "eval_seeds": 8}, "curve": [{}, {}]}))
    assert not finished(path, RUNS["ours"], 0, args)
    path.write_text(json.dumps({"eval": evals, "curve": [{}]}))  # 1 iteration, 2 asked
    assert not finished(path, RUNS["ours"], 0, args)
