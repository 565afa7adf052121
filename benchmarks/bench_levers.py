"""Measured speed levers of the rlsd iteration on the comparison model (``common.BENCH_UNET``, 4x16x16 latents).

Each lever is timed against its baseline in the same process, alternating (A B A B ...) so load hits both
alike; the median seconds and ``gain = baseline / lever`` (> 1: faster) are reported, zero gains included:

* ``sample_batch``: ``sample_trajectories`` of 16 samples in one pass vs micro-batches of 8 and 4;
* ``cfg_doubled``: CFG as one 2B-row UNet call vs two B-row calls;
* ``inference_mode``: the sampling forward under ``torch.inference_mode`` vs ``torch.no_grad``;
* ``channels_last``: UNet forward + backward in channels_last memory format;
* ``threads``: UNet forward + backward with 2 threads vs 1 (per process);
* ``adamw``: the optimizer step, for-loop vs foreach vs fused AdamW;
* ``item_sync``: one ``float(loss)`` per micro-batch (a host sync on GPU; on CPU only the call);
* ``prompt_cache``: encoding 16 prompts (8 distinct) once each vs every row;
* ``compile``: ``torch.compile`` of the UNet forward (inference) and forward + backward.

    python benchmarks/bench_levers.py [--reps 5] [--skip compile]

Writes ``benchmarks/results/bench_levers_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from common import RESULTS, build_bench_folder  # noqa: E402  (puts the repo root on sys.path)
from rlsd.models import load_model  # noqa: E402
from rlsd.sampling import encode_unique, guided_model_output, sample_trajectories  # noqa: E402

ROWS = 8  # samples per UNet call (train batch); 2x with CFG


def compare(fns: dict[str, Callable[[], object]], reps: int) -> dict:
    """Median seconds of each function (one warm-up call each, then ``reps`` alternating rounds)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(reps):
        for name in (list(fns) if rep % 2 == 0 else list(reversed(fns))):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = next(iter(med))
    return {"median_s": med, "gain": {k: med[base] / v for k, v in med.items() if k != base},
            "load_1min": os.getloadavg()[0]}


def unet_inputs(model, rows: int, gen_seed: int = 0):
    gen = torch.Generator().manual_seed(gen_seed)
    x = torch.randn(rows, 4, 16, 16, generator=gen)
    emb = torch.randn(rows, 16, 32, generator=gen)
    return x, torch.full((rows,), 501), emb


def fwd_bwd(model, x, t, emb, unet=None) -> Callable[[], None]:
    unet = unet if unet is not None else model.unet

    def run() -> None:
        out = unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=torch.cat([emb, emb])).sample
        out.square().mean().backward()
        model.unet.zero_grad(set_to_none=True)
    return run


def lever_sample_batch(model, reps: int) -> dict:
    prompts = [f"prompt {i % 8}" for i in range(16)]

    def run(size: int) -> Callable[[], object]:
        return lambda: sample_trajectories(model, prompts, num_steps=5, guidance_scale=5.0, eta=1.0, batch_size=size,
                                           generator=[torch.Generator().manual_seed(i) for i in range(16)])
    return compare({"batch_16": run(0), "batch_8": run(8), "batch_4": run(4)}, reps)


def lever_cfg(model, reps: int) -> dict:
    x, t, emb = unet_inputs(model, ROWS)

    def two_calls() -> torch.Tensor:
        u = model.unet(x, t, encoder_hidden_states=emb).sample
        c = model.unet(x, t, encoder_hidden_states=emb).sample
        return u + 5.0 * (c - u)
    with torch.no_grad():
        return compare({"two_calls": two_calls,
                        "doubled": lambda: guided_model_output(model, x, t, emb, emb, 5.0)}, reps)


def lever_inference_mode(model, reps: int) -> dict:
    x, t, emb = unet_inputs(model, ROWS)

    def under(ctx) -> Callable[[], object]:
        def run() -> object:
            with ctx():
                return guided_model_output(model, x, t, emb, emb, 5.0)
        return run
    return compare({"no_grad": under(torch.no_grad), "inference_mode": under(torch.inference_mode)}, reps)


def lever_channels_last(model, reps: int) -> dict:
    x, t, emb = unet_inputs(model, ROWS)
    base = fwd_bwd(model, x, t, emb)

    def channels_last() -> None:
        model.unet.to(memory_format=torch.channels_last)
        try:
            fwd_bwd(model, x.contiguous(memory_format=torch.channels_last), t, emb)()
        finally:
            model.unet.to(memory_format=torch.contiguous_format)
    return compare({"contiguous": base, "channels_last": channels_last}, reps)


def lever_threads(model, reps: int) -> dict:
    x, t, emb = unet_inputs(model, ROWS)
    base = fwd_bwd(model, x, t, emb)

    def two_threads() -> None:
        torch.set_num_threads(2)
        try:
            base()
        finally:
            torch.set_num_threads(1)
    return compare({"1_thread": base, "2_threads": two_threads}, reps)


def lever_adamw(model, reps: int) -> dict:
    params = [p for p in model.unet.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opts = {name: torch.optim.AdamW(params, lr=1e-9, **kw) for name, kw in
            (("for_loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True}))}
    out = compare({k: o.step for k, o in opts.items()}, reps * 4)
    for p in params:
        p.grad = None
    return out


def lever_item(model, reps: int) -> dict:
    losses = [torch.randn(()) for _ in range(10)]
    return compare({"none": lambda: None, "ten_item_calls": lambda: [float(v) for v in losses]}, reps * 4)


def lever_prompt_cache(model, reps: int) -> dict:
    prompts = [f"prompt {i % 8}" for i in range(16)]
    with torch.no_grad():
        return compare({"every_row": lambda: model.encode_prompts(prompts),
                        "distinct_once": lambda: encode_unique(model, prompts)}, reps * 4)


def lever_compile(model, reps: int) -> dict:
    x, t, emb = unet_inputs(model, ROWS)
    compiled = torch.compile(model.unet)
    start = time.perf_counter()
    with torch.no_grad():
        inference = compare({"eager": lambda: guided_model_output(model, x, t, emb, emb, 5.0),
                             "compiled": lambda: compiled(torch.cat([x, x]), torch.cat([t, t]),
                                                          encoder_hidden_states=torch.cat([emb, emb]))}, reps)
    inference["first_call_s"] = time.perf_counter() - start
    print("compile forward_inference", json.dumps(inference), flush=True)
    start = time.perf_counter()
    training = compare({"eager": fwd_bwd(model, x, t, emb), "compiled": fwd_bwd(model, x, t, emb, compiled)}, reps)
    training["first_call_s"] = time.perf_counter() - start
    return {"forward_inference": inference, "forward_backward": training}


LEVERS = {"sample_batch": lever_sample_batch, "cfg_doubled": lever_cfg, "inference_mode": lever_inference_mode,
          "channels_last": lever_channels_last, "threads": lever_threads, "adamw": lever_adamw,
          "item_sync": lever_item, "prompt_cache": lever_prompt_cache, "compile": lever_compile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--skip", nargs="*", default=[], choices=list(LEVERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(build_bench_folder(Path(tmp) / "bench"))
        for name in [n for n in args.only if n not in args.skip]:
            results[name] = LEVERS[name](model, args.reps)
            print(name, json.dumps(results[name]), flush=True)
    out = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "torch": torch.__version__,
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": 1, "levers": results}
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "bench_levers_cpu.json"
    if previous.exists() and set(results) != set(LEVERS):  # a partial run keeps the other levers' numbers
        old = json.loads(previous.read_text())
        out["levers"] = {**old.get("levers", {}), **results}
    previous.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
