"""The line protocol of the benchmark workers (standard library only: it also runs in the trl venv).

A worker builds its trainer, prints ``{"ready": ...}`` and then answers each command line on stdin with one
JSON line on stdout: ``step`` runs one RL iteration and reports its wall and CPU seconds; ``quit`` ends.
The driver (``bench_vs_trl.py``) alternates the workers' iterations, so machine load hits every arm alike,
and no worker burns CPU while another is timed (a waiting worker blocks on stdin).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable


def set_threads(threads: int) -> None:
    """Pin torch's intra- and inter-op pools to ``threads`` (call before any torch work)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set by an earlier parallel region
        pass


def timed(fn: Callable[[], Any]) -> dict:
    """Wall and process-CPU seconds of ``fn()`` plus the 1-minute load average at its end."""
    wall, cpu = time.perf_counter(), time.process_time()
    extra = fn()
    out = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "load_1min": os.getloadavg()[0]}
    if isinstance(extra, dict):
        out.update(extra)
    return out


def serve(info: dict, commands: dict[str, Callable[[], Any]]) -> None:
    """Print ``info`` as the ready line, then run ``commands[line]`` (timed) per stdin line until ``quit``."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    out.write(json.dumps({"ready": info}) + "\n")
    out.flush()
    for line in sys.stdin:
        name = line.strip()
        if name == "quit":
            break
        if name not in commands:
            reply = {"error": f"unknown command {name!r}; use one of {sorted(commands)} or quit"}
        else:
            reply = timed(commands[name])
        out.write(json.dumps(reply) + "\n")
        out.flush()
