"""Distribution-level rewards on 2 gloo ranks equal the single-process result (groups stay on one rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlsd.distributed import free_port

ROOT = Path(__file__).resolve().parents[1]



@pytest.mark.distributed
def test_group_reward_per_rank_equals_single_process(tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(ROOT / "tests/dist_scripts/reward_groups_check.py"), str(tmp_path)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert sum(r["num_local"] for r in records) == 24
    assert all(r["max_abs_diff"] == 0.0 for r in records)
    assert records[0]["distinct_group_values"] > 1  # the check is not vacuous
