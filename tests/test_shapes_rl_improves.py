"""`make demo`'s joint RL run shows each of the paper's three effects on the test set (slow; runs in CI).

The test runs the demo job itself (``rlsd.demo.main``: joint RL of configs/shapes_joint.yaml with L_pre at
training seed 0, then base vs fine-tuned on the test set of :mod:`rlsd.protocol`, the same initial noise for
both) and asserts each effect in the metric a user would judge it by, never in the optimised reward alone:

===============================  =====================================  ==========================================
effect                           asserted                               prompts
===============================  =====================================  ==========================================
preference                       proxy and gold quality both rise       every evaluation prompt
compositionality                 count-aware detection rises (extra     16 unseen compositions x 12 seeds
                                 objects count as misses)
diversity                        SP over the drawn objects falls, and   4 colour-open prompts x 32 seeds
                                 the empty share does not rise          (SP and shares per block of 8 seeds)
===============================  =====================================  ==========================================

"Rises" and "falls" mean a one-sided paired Wilcoxon p < 0.05 in the right direction; "does not rise" means an
increase of at most 2 percentage points. The same command over the five test seeds is the reported study
(``python -m rlsd.demo --seeds 0-4``, ``figures/demo_results.md``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05
#: metrics (rlsd.study.METRICS keys) that must improve significantly
IMPROVES = ("preference", "gold", "count_aware", "sp_drawn")


@pytest.mark.slow
def test_demo_rl_run_shows_each_effect_on_the_test_set(tmp_path, monkeypatch):
    from rlsd.demo import main

    monkeypatch.chdir(ROOT)
    per_seed = main(["--out", str(tmp_path / "demo"), "--figures", str(tmp_path / "figures"), "log.progress=false"])
    rows = per_seed.set_index("key")
    report = "\n".join(f"{k}: {r['base']:.4f} -> {r['fine-tuned']:.4f} (p {r['p']:.2e})" for k, r in rows.iterrows())
    print(report)
    assert all(rows.loc[k, "improved"] and rows.loc[k, "p"] < ALPHA for k in IMPROVES), report
    assert rows.loc["empty", "change"] <= 0.02, report
    assert (tmp_path / "figures" / "demo_results.md").is_file()
    assert len(list((tmp_path / "figures").glob("demo_*.png"))) == 5
    samples = pd.read_csv(tmp_path / "demo" / "samples.csv")
    per_model = 16 * 12 + 8 * 12 + 4 * 32
    assert samples.groupby("model").size().to_dict() == {"base": per_model, "joint/seed0": per_model}
