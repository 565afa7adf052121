"""Weak scaling of the RL trainer from 1 to 2 CPU processes (gloo): fixed work per rank, double the global batch.

Each configuration is a real ``python -m rlsd.train`` run (1 process) or ``accelerate launch`` run (2 processes)
of the tiny SD model, one torch thread per process. The runs alternate (1, 2, 1, 2, ...) so machine load hits both
alike. Throughput is the median ``perf/samples_per_s`` over the iterations after the first (warm-up) of each run;
weak-scaling efficiency = throughput(2 procs) / (2 x throughput(1 proc)) (target >= 0.85).

    python benchmarks/bench_scaling.py --repeats 2 --iters 4

Needs at least 2 free cores to be meaningful; writes ``benchmarks/results/bench_scaling_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, RESULTS  # noqa: E402  (puts the repo root on sys.path)
from rlsd.recording import read_metrics  # noqa: E402
from rlsd.train import launch_command  # noqa: E402


def run(processes: int, args: argparse.Namespace, run_dir: Path) -> float:
    """Median samples/s of one run with ``processes`` ranks and ``args.prompts`` prompts per rank."""
    overrides = [f"sample.num_prompts_per_iter={args.prompts * processes}", f"sample.num_steps={args.steps}",
                 f"train.iterations={args.iters}", f"log.run_dir={run_dir}", "log.progress=false",
                 "log.export=false", "log.image_every=0", "log.checkpoint_every=0", "tasks.0.group_size=2"]
    if processes == 1:
        cmd, env = [sys.executable, "-m", "rlsd.train", "--config", "configs/tiny_sd_smoke.yaml", *overrides], dict(os.environ)
    else:
        cmd, env = launch_command("configs/tiny_sd_smoke.yaml", overrides, num_processes=processes)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{processes}-process run failed: {proc.stderr[-1500:]}")
    values = read_metrics(run_dir)["perf/samples_per_s"].dropna().tolist()[1:]
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="alternating (1-proc, 2-proc) pairs")
    parser.add_argument("--iters", type=int, default=4, help="iterations per run (first is warm-up)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per rank (x group 2 samples)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    args = parser.parse_args()
    through: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for p in (1, 2):
                through[p].append(run(p, args, Path(tmp) / f"p{p}_r{r}"))
                print(f"repeat {r}: {p} process(es): {through[p][-1]:.3f} samples/s", flush=True)
    one, two = statistics.median(through[1]), statistics.median(through[2])
    out = {"samples_per_s": {"1": one, "2": two}, "runs": through, "efficiency": two / (2 * one),
           "per_rank_samples": args.prompts * 2, "num_steps": args.steps, "cpu_count": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0], "platform": platform.platform()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scaling_cpu.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
