"""rlsd.distributed: generators, slicing, and a real 2-process gloo run of the normalisation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlsd.distributed import free_port
import torch

from rlsd.distributed import (
    all_reduce_mean,
    gather_objects,
    gather_tensor,
    is_main_process,
    local_slice,
    main_process_first,
    rank_and_world,
    rank_generator,
    sample_generator_for_slot,
    slot_generators,
)
from rlsd.objective import normalize_advantages

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "dist_scripts" / "normalize_check.py"


def test_rank_generator_is_deterministic_and_distinct():
    a = torch.randn(5, generator=rank_generator(3, 10, 0))
    assert torch.equal(a, torch.randn(5, generator=rank_generator(3, 10, 0)))
    for other in (rank_generator(3, 10, 1), rank_generator(3, 11, 0), rank_generator(4, 10, 0)):
        assert not torch.equal(a, torch.randn(5, generator=other))


def test_slot_and_rank_streams_differ():
    a = torch.randn(5, generator=rank_generator(0, 0, 2))
    b = torch.randn(5, generator=sample_generator_for_slot(0, 0, 2))
    assert not torch.equal(a, b)


def test_slot_noise_independent_of_split():
    whole = [torch.randn(4, generator=g) for g in slot_generators(9, 2, range(6))]
    halves = [torch.randn(4, generator=g) for r in range(3) for g in slot_generators(9, 2, local_slice(6, r, 3))]
    assert all(torch.equal(a, b) for a, b in zip(whole, halves))


def test_negative_seed_rejected():
    with pytest.raises(ValueError, match="seed must be >= 0"):
        rank_generator(-1, 0, 0)


def test_local_slice():
    assert local_slice(8, 1, 2) == slice(4, 8)
    assert local_slice(8, 0, 1) == slice(0, 8)
    with pytest.raises(ValueError, match="batch 7 not divisible by world size 2; set train.batch to a multiple"):
        local_slice(7, 0, 2, name="train.batch")
    with pytest.raises(ValueError, match="rank 2"):
        local_slice(8, 2, 2)


def test_single_process_helpers_without_accelerator():
    t = torch.arange(4.0)
    assert gather_tensor(None, t) is t
    assert gather_objects(None, ["a", "b"]) == ["a", "b"]
    assert torch.equal(all_reduce_mean(None, t), t)
    assert is_main_process(None) and rank_and_world(None) == (0, 1)
    with main_process_first(None):
        pass


def test_single_process_accelerator():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(gather_tensor(acc, t), t)
    assert gather_objects(acc, ["x"]) == ["x"]
    assert is_main_process(acc) and rank_and_world(acc) == (0, 1)



@pytest.mark.distributed
def test_two_process_gloo_normalisation_equals_single_process(tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ)
    env.update(
        ACCELERATE_USE_CPU="1",
        HF_HOME=str(tmp_path / "hf"),  # no user-level accelerate default_config.yaml
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        str(SCRIPT), str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[:3000] + "\n...\n" + proc.stderr[-2000:]
    res = json.loads(out.read_text())

    assert res["world_size"] == 2 and res["ranks"] == [0, 1]  # both processes really ran
    assert res["mean_of_ranks"] == pytest.approx(0.5)

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from normalize_check import GLOBAL_REWARDS, ITERATION, NOISE_SHAPE, SEED
    finally:
        sys.path.pop(0)
    assert res["rewards"] == pytest.approx(GLOBAL_REWARDS)
    assert res["prompts"] == [f"prompt {i}" for i in range(len(GLOBAL_REWARDS))]
    single = normalize_advantages(torch.tensor(GLOBAL_REWARDS))
    assert torch.allclose(torch.tensor(res["advantages"]), single, atol=1e-6, rtol=0)

    noise_1proc = torch.stack(
        [torch.randn(NOISE_SHAPE, generator=g) for g in slot_generators(SEED, ITERATION, range(len(GLOBAL_REWARDS)))]
    )
    assert torch.equal(torch.tensor(res["noise"]), noise_1proc)
