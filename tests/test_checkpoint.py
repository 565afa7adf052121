"""rlsd.checkpoint: round trip, RNG restore, atomicity, pruning, corrupt-checkpoint fallback, stale writes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from rlsd.checkpoint import (
    capture_rng_state,
    checkpoint_dir,
    checkpoint_problem,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_writes,
    restore_rng_state,
    save_checkpoint,
)


def _draw(gen: torch.Generator) -> tuple:
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist(), torch.rand(2, generator=gen).tolist())


def _trainer_state(iteration: int, gen: torch.Generator) -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-6)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {
        "iteration": iteration,
        "optimizer": opt.state_dict(),
        "prompt_source": {"position": 17},
        "tracker": {"buffer_size": 4, "min_count": 2, "stats": {"a": [1.0]}},
        "config": {"train": {"lr": 2e-6}},
        "rng": capture_rng_state({"sampler": gen}),
    }


def test_round_trip_restores_rng_and_state(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    gen = torch.Generator().manual_seed(4)
    _draw(gen)  # advance every stream
    weights = {"w": torch.randn(4, 4), "b": torch.zeros(4)}
    state = _trainer_state(10, gen)  # captures the RNG states last
    path = save_checkpoint(checkpoint_dir(tmp_path, 10), state, model_state=weights)
    expected_next = _draw(gen)

    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # clobber everything
    gen2 = torch.Generator().manual_seed(99)
    loaded = load_checkpoint(path)
    restore_rng_state(loaded["rng"], {"sampler": gen2})
    assert _draw(gen2) == expected_next

    assert loaded["iteration"] == 10 and loaded["prompt_source"] == {"position": 17}
    assert loaded["config"] == {"train": {"lr": 2e-6}}
    assert torch.equal(loaded["model_state"]["w"], weights["w"])
    assert torch.equal(
        loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]
    )


def test_restore_unknown_generator_errors(tmp_path):
    rng = capture_rng_state({"a": torch.Generator()})
    with pytest.raises(ValueError, match="no RNG state for generator 'b'"):
        restore_rng_state(rng, {"b": torch.Generator()})


def test_save_extra_files_and_overwrite(tmp_path):
    path = checkpoint_dir(tmp_path, 3)
    save_checkpoint(path, {"iteration": 3, "v": 1}, save_extra=lambda d: (d / "lora.txt").write_text("x"))
    assert (path / "lora.txt").read_text() == "x"
    save_checkpoint(path, {"iteration": 3, "v": 2})
    assert load_checkpoint(path)["v"] == 2
    assert not (path / "lora.txt").exists()
    assert [p.name for p in path.parent.iterdir()] == ["iter_000003"]  # no tmp/old leftovers


def test_simulated_crash_is_ignored_and_refused(tmp_path):
    save_checkpoint(checkpoint_dir(tmp_path, 5), {"iteration": 5})
    # a run killed mid-save leaves a tmp dir; one killed during a hand copy leaves a dir w/o marker
    crashed_tmp = tmp_path / "checkpoints" / "iter_000010.tmp-4242"
    crashed_tmp.mkdir()
    torch.save({"iteration": 10}, crashed_tmp / "trainer_state.pt")
    no_marker = checkpoint_dir(tmp_path, 20)
    no_marker.mkdir()
    torch.save({"iteration": 20}, no_marker / "trainer_state.pt")

    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 5)
    with pytest.raises(ValueError, match="incomplete"):
        load_checkpoint(no_marker)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "checkpoints" / "iter_000999")


def test_failure_during_save_leaves_nothing(tmp_path):
    def boom(folder):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(checkpoint_dir(tmp_path, 1), {"iteration": 1}, save_extra=boom)
    assert list((tmp_path / "checkpoints").iterdir()) == []
    assert latest_checkpoint(tmp_path) is None


def test_latest_by_iteration_number_and_keep_last(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for it in (2, 10, 9, 100):
        save_checkpoint(checkpoint_dir(tmp_path, it), {"iteration": it}, keep_last=3)
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 100)
    assert [it for it, _ in list_checkpoints(tmp_path)] == [9, 10, 100]
    assert load_checkpoint(latest_checkpoint(tmp_path))["iteration"] == 100


def _two_checkpoints(tmp_path):
    for it in (1, 2):
        save_checkpoint(checkpoint_dir(tmp_path, it), {"iteration": it}, model_state={"w": torch.full((64,), it)})
    return checkpoint_dir(tmp_path, 1), checkpoint_dir(tmp_path, 2)


def _truncate(file, keep: int = 10) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:keep])


def test_marker_records_file_sizes(tmp_path):
    path = save_checkpoint(checkpoint_dir(tmp_path, 1), {"iteration": 1}, model_state={"w": torch.zeros(8)},
                           save_extra=lambda d: (d / "sub").mkdir() or (d / "sub" / "x.txt").write_text("abc"))
    sizes = json.loads((path / "COMPLETE").read_text())["sizes"]
    assert sizes == {name: (path / name).stat().st_size for name in ("model.safetensors", "sub/x.txt",
                                                                    "trainer_state.pt")}
    assert checkpoint_problem(path) is None


def test_truncated_latest_falls_back_to_the_previous_with_a_warning(tmp_path):
    first, second = _two_checkpoints(tmp_path)
    _truncate(second / "model.safetensors")
    assert checkpoint_problem(second).startswith("model.safetensors has 10 of ")
    with pytest.warns(UserWarning, match=r"skipped corrupt checkpoint iter_000002 \(model.safetensors has 10 of "
                                         r"\d+ bytes\); using the newest intact one, .*iter_000001"):
        assert latest_checkpoint(tmp_path) == first
    with pytest.raises(ValueError, match=r"iter_000002 is corrupt \(model.safetensors has 10 of"):
        load_checkpoint(second)  # an explicit path gets no fallback
    assert load_checkpoint(first)["iteration"] == 1


def test_no_intact_checkpoint_left_is_one_error(tmp_path):
    first, second = _two_checkpoints(tmp_path)
    _truncate(second / "trainer_state.pt")
    (first / "model.safetensors").unlink()
    assert checkpoint_problem(first) == "model.safetensors is missing"
    with pytest.raises(ValueError, match=r"no intact checkpoint in .*: all 2 are corrupt \(the newest, iter_000002: "
                                         r"trainer_state.pt has 10 of \d+ bytes\); restore one"):
        latest_checkpoint(tmp_path)


def test_marker_without_sizes_is_still_accepted(tmp_path):
    path = save_checkpoint(checkpoint_dir(tmp_path, 4), {"iteration": 4})
    (path / "COMPLETE").write_text(json.dumps({"iteration": 4, "files": ["COMPLETE", "trainer_state.pt"]}))
    assert checkpoint_problem(path) is None and latest_checkpoint(tmp_path) == path


def test_remove_stale_writes(tmp_path):
    kept = save_checkpoint(checkpoint_dir(tmp_path, 5), {"iteration": 5})
    root = kept.parent
    for name in ("iter_000006.tmp-4242", "iter_000005.old-77", "iter_000006.tmp-1"):
        (root / name).mkdir()
        (root / name / "trainer_state.pt").write_bytes(b"partial")
    # killed between the two renames of an overwrite: the replaced checkpoint only exists as .old
    replaced = save_checkpoint(checkpoint_dir(tmp_path, 3), {"iteration": 3})
    replaced.rename(root / "iter_000003.old-99")
    (root / "unrelated.tmp-5").mkdir()
    removed = remove_stale_writes(tmp_path)
    assert sorted(p.name for p in removed) == ["iter_000005.old-77", "iter_000006.tmp-1", "iter_000006.tmp-4242"]
    assert sorted(p.name for p in root.iterdir()) == ["iter_000003", "iter_000005", "unrelated.tmp-5"]
    assert load_checkpoint(root / "iter_000003")["iteration"] == 3
    assert remove_stale_writes(tmp_path / "missing") == []


class _Rank:
    """The part of an accelerator that save_checkpoint uses, for one rank of a fake 2-process run."""

    def __init__(self, main: bool):
        self.is_main_process, self.waits = main, 0

    def wait_for_everyone(self):
        self.waits += 1


def test_state_callables_run_on_the_main_process_only(tmp_path):
    calls = []

    def state():
        calls.append("state")
        return {"iteration": 7}

    def weights():
        calls.append("weights")
        return {"w": torch.ones(2)}

    other = _Rank(main=False)
    save_checkpoint(checkpoint_dir(tmp_path, 7), state, model_state=weights, accelerator=other)
    assert calls == [] and other.waits == 1 and not (tmp_path / "checkpoints").exists()
    main = _Rank(main=True)
    path = save_checkpoint(checkpoint_dir(tmp_path, 7), state, model_state=weights, accelerator=main)
    assert calls == ["state", "weights"] and main.waits == 1
    assert torch.equal(load_checkpoint(path)["model_state"]["w"], torch.ones(2))
