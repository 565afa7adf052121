"""rlsd's RL iteration vs trl 0.23.1's ``DDPOTrainer``, side by side on one pipeline (one command).

    python benchmarks/bench_vs_trl.py [--scratch .bench_venv] [--rounds 8] [--arms trl trl_sb8 rlsd]

1. Builds (once) a scratch venv for trl, never the project's: torch first (the CPU wheel pinned by the
   Makefile), then trl 0.23.1, peft and the diffusers / transformers / accelerate versions of
   requirements.lock. trl's code stays in that venv (git-ignored) and is not part of this repository.
2. Writes the shared SD-architecture pipeline folder (``common.build_bench_folder``: 3.9M-parameter UNet,
   4x16x16 latents, random weights), loaded by both trainers.
3. Starts one worker per arm (``trl_worker.py`` in the scratch venv, ``rlsd_worker.py`` here; one torch
   thread each), warms each up, then runs one iteration per arm per round, alternating the order
   (A B, B A, ...), so no two arms ever run at once and load drifts hit all arms alike.
4. Profiles one rlsd iteration by phase (``profile_phases.py``).

The matched config: 20 DDIM steps, eta 1, CFG 5; 16 samples per iteration (8 prompts x 2); train batch 8
with CFG; 5 of the 20 timesteps trained; full fine-tune, fp32, AdamW, grad-norm clip 1, clip range 1e-4;
JPEG-size reward computed synchronously; global advantage normalisation. rlsd keeps the paper's rule, an
optimizer step after each trained timestep (5 per iteration, each over both train batches: 2
accumulated micro-batches). trl's ``DDPOTrainer`` has no such mode: it accumulates gradients over the trained
timesteps of a train batch (``gradient_accumulation_steps = train_gradient_accumulation_steps (1) x 5``), so it
steps once per train batch, 2 per iteration. Both do the same UNet work (20 x 32-row sampling calls, 10 x
16-row re-scoring forward + backward); rlsd does 3 more optimizer steps. Arms: ``trl`` samples the 16 in
one call (``sample_batch_size=16``), ``trl_sb8`` in two calls of 8; ``rlsd`` uses ``sample.batch_size``
``--rlsd-sample-batch`` (0 = one pass).

Reports per-round samples/s (wall) and samples per CPU-second (process CPU time, robust to other load),
their medians and the rlsd / trl ratios, and the load average; writes ``benchmarks/results/bench_vs_trl_cpu.json``.
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
import time
from pathlib import Path

from common import REPO, RESULTS, build_bench_folder  # noqa: E402  (puts the repo root on sys.path)

TRL_PINS = ("trl==0.23.1",)
SAME_AS_PROJECT = ("diffusers", "transformers", "accelerate", "huggingface_hub", "peft", "safetensors", "numpy",
                   "pillow", "tokenizers")
TORCH_SPEC = "torch==2.13.0"  # the Makefile's CPU pin: installed first so no CUDA build is pulled


def lock_pins(names: tuple[str, ...]) -> list[str]:
    """``name==version`` of ``names`` from requirements.lock (case-insensitive)."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==", 1)
            pins[name.lower()] = f"{name}=={version}"
    missing = [n for n in names if n.lower() not in pins]
    if missing:
        raise ValueError(f"requirements.lock pins none of {missing}; regenerate it with tools/write_lock.py.")
    return [pins[n.lower()] for n in names]


def ensure_trl_venv(scratch: Path) -> Path:
    """The scratch venv's python, building the venv first unless its marker lists the same pins."""
    pins = [TORCH_SPEC, *TRL_PINS, *lock_pins(SAME_AS_PROJECT)]
    python, marker = scratch / "bin" / "python", scratch / ".bench_pins"
    if python.exists() and marker.exists() and marker.read_text().split() == pins:
        return python
    print(f"building the trl venv in {scratch} ({' '.join(pins)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(scratch)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, TORCH_SPEC], check=True)
    subprocess.run([*pip, *pins[1:]], check=True)
    marker.write_text("\n".join(pins) + "\n")
    return python


class Worker:
    """One benchmark worker process speaking ``worker_loop``'s line protocol."""

    def __init__(self, name: str, cmd: list[str], log: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        env.pop("PYTHONPATH", None)
        self.name, self.log = name, log
        self.proc = subprocess.Popen(cmd, cwd=REPO / "benchmarks", env=env, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log.open("w"))
        self.info = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited; its log {self.log} ends: "
                               f"{self.log.read_text()[-1500:]}")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"worker {self.name}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def arm_commands(args: argparse.Namespace, trl_python: Path, model: Path) -> dict[str, list[str]]:
    shared = ["--model", str(model), "--steps", str(args.steps), "--guidance", str(args.guidance),
              "--samples", str(args.samples), "--train-batch", str(args.train_batch), "--timesteps",
              str(args.timesteps), "--threads", "1"]
    trl = [str(trl_python), "trl_worker.py", *shared]
    rlsd = [sys.executable, "rlsd_worker.py", *shared, "--sample-batch", str(args.rlsd_sample_batch)]
    if args.rlsd_set:
        rlsd += ["--set", *args.rlsd_set]
    return {"trl": [*trl, "--sample-batch", str(args.samples)], "trl_sb8": [*trl, "--sample-batch", "8"],
            "rlsd": rlsd}


def run_rounds(workers: dict[str, Worker], rounds: int, warmup: int, samples: int) -> dict[str, list[dict]]:
    """``warmup`` untimed then ``rounds`` timed iterations per arm, the arm order reversed every round."""
    for _ in range(warmup):
        for worker in workers.values():
            worker.ask("step")
    per_arm: dict[str, list[dict]] = {name: [] for name in workers}
    names = list(workers)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            reply = workers[name].ask("step")
            reply.update(round=r, samples_per_s=samples / reply["wall_s"], samples_per_cpu_s=samples / reply["cpu_s"])
            per_arm[name].append(reply)
            print(f"round {r} {name:8s} {reply['samples_per_s']:.3f} samples/s, {reply['samples_per_cpu_s']:.3f} "
                  f"samples/CPU-s, load {reply['load_1min']:.2f}", flush=True)
    return per_arm


def summarize(per_arm: dict[str, list[dict]]) -> dict:
    """Medians per arm and rlsd / trl ratios: of the medians and the median of the per-round ratios."""
    med = {name: {k: statistics.median(r[k] for r in rows) for k in ("samples_per_s", "samples_per_cpu_s")}
           for name, rows in per_arm.items()}
    ratios = {}
    for base in [n for n in per_arm if n.startswith("trl")]:
        for metric in ("samples_per_s", "samples_per_cpu_s"):
            paired = [a[metric] / b[metric] for a, b in zip(per_arm["rlsd"], per_arm[base])]
            ratios[f"rlsd_over_{base}/{metric}"] = {
                "of_medians": med["rlsd"][metric] / med[base][metric], "median_of_rounds": statistics.median(paired),
                "min_round": min(paired), "max_round": max(paired)}
    return {"medians": med, "ratios": ratios}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scratch", type=Path, default=REPO / ".bench_venv", help="trl's venv (git-ignored)")
    parser.add_argument("--arms", nargs="+", default=["trl", "trl_sb8", "rlsd"], choices=["trl", "trl_sb8", "rlsd"])
    parser.add_argument("--rounds", type=int, default=8, help="timed iterations per arm")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per arm first")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=5)
    parser.add_argument("--rlsd-sample-batch", type=int, default=0, help="rlsd's sample.batch_size")
    parser.add_argument("--rlsd-set", nargs="*", default=[], help="extra rlsd config overrides key=value")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_vs_trl_cpu.json")
    args = parser.parse_args()
    if "rlsd" not in args.arms or not any(a.startswith("trl") for a in args.arms):
        parser.error("--arms needs rlsd and at least one trl arm")
    trl_python = ensure_trl_venv(args.scratch.resolve())
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_bench_folder(Path(tmp) / "pipeline")
        commands = arm_commands(args, trl_python, model)
        workers: dict[str, Worker] = {}
        try:
            for name in args.arms:
                workers[name] = Worker(name, commands[name], Path(tmp) / f"{name}.log")
            per_arm = run_rounds(workers, args.rounds, args.warmup, args.samples)
            profile = None if args.no_profile else workers["rlsd"].ask("profile")
        finally:
            for worker in workers.values():
                worker.close()
    infos = {name: {k: v for k, v in w.info.items() if k != "config"} for name, w in workers.items()}
    out = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time())), "commit": git_commit(),
           "machine": machine(), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
           "matched_config": {k: getattr(args, k) for k in ("steps", "guidance", "samples", "train_batch",
                                                             "timesteps", "rlsd_sample_batch", "rlsd_set")},
           "optimizer_steps_per_iteration": {"rlsd": args.timesteps, "trl": args.samples // args.train_batch},
           "trl_gradient_accumulation_steps": infos[next(a for a in args.arms if a.startswith("trl"))].get(
               "gradient_accumulation_steps"),
           "workers": infos, "rlsd_config": workers["rlsd"].info["config"], **summarize(per_arm),
           "rounds": per_arm, "rlsd_profile": profile}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"medians": out["medians"], "ratios": out["ratios"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
