"""Faults: a used run dir, non-finite numbers, SIGTERM/SIGINT, corrupt and half-written checkpoints, per-rank
checkpoint state; each ends with one line and a documented exit code, and none loses the bit-identical resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlsd.checkpoint import checkpoint_dir, checkpoint_problem, list_checkpoints, load_checkpoint
from rlsd.config import load_config
from rlsd.distributed import free_port
from rlsd.guards import StopSignals, TrainingStopped, check_finite_step, first_non_finite
from rlsd.train import EXIT_BAD_INPUT, EXIT_STOPPED, main
from rlsd.trainer import RLTrainer

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", "configs/tiny_sd_smoke.yaml", "model.path=tiny-pixel", "sample.num_steps=3",
        "sample.num_prompts_per_iter=2", "tasks.0.group_size=2", "train.timesteps_per_iter=1",
        "log.progress=false", "log.export=false", "log.image_every=0"]
#: a resume must restore weights, optimizer, LR schedule, prompt position and the L_pre stream
RESUMABLE = [*TINY[2:], "train.timesteps_per_iter=2", "train.lr=1e-3", "train.clip_range=0.2",
             "train.lr_warmup_iters=3", "pretrain.enabled=true", "pretrain.batch_size=2",
             "pretrain.dataset={name: shapesworld}"]


def _error_line(capsys, prefix: str = "error: ") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(prefix), err
    return err[0]


def _config(run: Path, *extra: str):
    return load_config("configs/tiny_sd_smoke.yaml", [*RESUMABLE, f"log.run_dir={run}", *extra])


def _final_state(run: Path) -> dict:
    return load_checkpoint(list_checkpoints(run)[-1][1])


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-identical weights, optimizer state, LR schedule, prompt positions and L_pre stream."""
    assert a["iteration"] == b["iteration"]
    assert a["model_state"].keys() == b["model_state"].keys()
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for i in opt_a:
        assert all(torch.equal(torch.as_tensor(opt_a[i][k]), torch.as_tensor(opt_b[i][k])) for k in opt_a[i])
    for key in ("lr_scheduler", "prompt_sources", "trackers", "pretrain"):
        assert a[key] == b[key], key


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The final checkpoint of an uninterrupted 4-iteration run."""
    run = tmp_path_factory.mktemp("straight") / "run"
    RLTrainer(_config(run, "train.iterations=4")).train()
    return _final_state(run)


def _signal_during(monkeypatch, iteration: int, signum: int) -> None:
    """Make every RLTrainer send ``signum`` to this process while sampling ``iteration`` (mid-iteration)."""
    collect = RLTrainer.collect

    def collect_and_signal(self, task_index, it):
        if it == iteration:
            os.kill(os.getpid(), signum)
        return collect(self, task_index, it)

    monkeypatch.setattr(RLTrainer, "collect", collect_and_signal)


# ----------------------------------------------------------------------------------------------- run dir
def test_fresh_run_in_used_run_dir_is_refused_before_the_model_loads(tmp_path: Path, capsys, monkeypatch) -> None:
    import rlsd.trainer

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step\n")
    monkeypatch.setattr(rlsd.trainer, "load_policy", lambda *a, **k: pytest.fail("model loaded"))
    code = main([*TINY, f"log.run_dir={run}"])
    line = _error_line(capsys)
    assert code == 2 and str(run) in line and "--resume auto" in line and "log.run_dir" in line, line
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]  # nothing written


def test_resume_auto_and_empty_run_dir_are_accepted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()  # an empty folder is fine
    assert main([*TINY, f"log.run_dir={run}", "train.iterations=1"]) == 0
    assert main([*TINY, f"log.run_dir={run}", "train.iterations=2", "--resume", "auto"]) == 0
    assert (run / "checkpoints" / "iter_000002" / "COMPLETE").is_file()


# ----------------------------------------------------------------------------------------------- signals
def test_sigterm_mid_run_checkpoints_and_resume_is_bit_identical(tmp_path: Path, monkeypatch, straight) -> None:
    run = tmp_path / "run"
    _signal_during(monkeypatch, iteration=1, signum=signal.SIGTERM)
    trainer = RLTrainer(_config(run, "train.iterations=4", "log.checkpoint_every=0", "log.export=true"))
    with pytest.raises(TrainingStopped, match=r"SIGTERM received: stopped after iteration 2 with checkpoint .*"
                                              r"iter_000002; continue with --resume auto") as stop:
        trainer.train()  # checkpoint_every=0: without the signal the first checkpoint would be iteration 4
    assert stop.value.iteration == 2 and stop.value.checkpoint == checkpoint_dir(run, 2)
    assert [it for it, _ in list_checkpoints(run)] == [2] and checkpoint_problem(checkpoint_dir(run, 2)) is None
    assert not (run / "export").exists()  # an interrupted run is not exported
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    resumed = RLTrainer(_config(run, "train.iterations=4"))
    resumed.train(resume="auto")
    assert_same_state(_final_state(run), straight)


def test_sigint_in_the_cli_exits_3_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    _signal_during(monkeypatch, iteration=0, signum=signal.SIGINT)
    code = main([*TINY, f"log.run_dir={run}", "train.iterations=3", "log.checkpoint_every=0"])
    line = _error_line(capsys, prefix="stopped: ")
    assert code == EXIT_STOPPED == 3
    assert "SIGINT received: stopped after iteration 1" in line and "--resume auto" in line, line
    assert [it for it, _ in list_checkpoints(run)] == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stop_during_the_last_iteration_just_finishes(tmp_path: Path, monkeypatch) -> None:
    _signal_during(monkeypatch, iteration=1, signum=signal.SIGTERM)
    trainer = RLTrainer(_config(tmp_path / "run", "train.iterations=2", "pretrain.enabled=false"))
    trainer.train()  # nothing left to resume: no TrainingStopped
    assert trainer.iteration == 2 and [it for it, _ in list_checkpoints(tmp_path / "run")] == [1, 2]


def test_stop_signals_records_the_first_and_ignores_repeats() -> None:
    with StopSignals() as signals:
        assert signals.name is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # e.g. a launcher forwarding a second signal: still a graceful stop
        assert signals.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ----------------------------------------------------------------------------------------------- non-finite
def test_infinite_lr_stops_before_the_first_step_and_saves_nothing(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code = main([*TINY, f"log.run_dir={run}", "train.lr=.inf", "train.iterations=2", "log.checkpoint_every=1"])
    line = _error_line(capsys)
    assert code == EXIT_BAD_INPUT
    assert "iteration 0, task 'jpeg': the learning rate is inf; stopped before the optimizer step" in line, line
    assert list_checkpoints(run) == []


def test_baseline_methods_are_guarded_too(tmp_path: Path, capsys) -> None:
    code = main([*TINY, f"log.run_dir={tmp_path / 'run'}", "train.method=rwr", "train.lr=.inf"])
    line = _error_line(capsys)
    assert code == EXIT_BAD_INPUT and "iteration 0, task 'jpeg': the learning rate is inf" in line, line


def test_nan_gradient_stops_before_the_step_naming_iteration_and_task(tmp_path: Path) -> None:
    trainer = RLTrainer(_config(tmp_path / "run", "pretrain.enabled=false"))
    trainer.step(0)
    trainer.params[0].register_hook(lambda grad: grad * float("nan"))  # finite loss, NaN gradient
    before = [p.detach().clone() for p in trainer.params]
    with pytest.raises(ValueError, match=r"^iteration 1, task 'jpeg': a gradient is NaN/inf; stopped before the "
                                         r"optimizer step"):
        trainer.step(1)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params))  # no step taken


def test_non_finite_weights_are_never_checkpointed(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    trainer = RLTrainer(_config(run, "pretrain.enabled=false", "train.iterations=3", "log.checkpoint_every=1"))
    step = trainer.step

    def step_then_poison(it):  # weights that turn inf in the last step of an iteration reach the checkpoint
        out = step(it)
        if it == 1:
            with torch.no_grad():
                trainer.params[-1].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(trainer, "step", step_then_poison)
    with pytest.raises(ValueError, match=r"^iteration 2: weight \S+ is NaN/inf; refusing to save a checkpoint"):
        trainer.train()
    assert [it for it, _ in list_checkpoints(run)] == [1]


def test_finite_guards() -> None:
    a, b = torch.zeros(3), torch.tensor([1.0, float("inf")])
    assert first_non_finite([a, None, a]) is None and first_non_finite([a, None, b, b]) == 2
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([float("nan"), 0.0])
    with pytest.raises(ValueError, match=r"^iteration 3, task 't': a gradient is NaN/inf"):
        check_finite_step([param], 1.0, iteration=3, task="t")
    check_finite_step([param], 1.0, iteration=3, task="t", grads=False)  # an fp16 scaler skips such a step


# ----------------------------------------------------------------------------------------------- checkpoints
def test_resume_auto_falls_back_from_a_truncated_checkpoint(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main([*TINY, f"log.run_dir={run}", "train.iterations=3", "log.checkpoint_every=1"]) == 0
    latest = checkpoint_dir(run, 3) / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])
    trainer = RLTrainer(load_config(TINY[1], [*TINY[2:], f"log.run_dir={run}", "train.iterations=4"]))
    from rlsd.trainer_state import load_trainer_state

    with pytest.warns(UserWarning, match=r"skipped corrupt checkpoint iter_000003 \(model.safetensors has 100 of "
                                         r"\d+ bytes\); using the newest intact one, .*iter_000002"):
        load_trainer_state(trainer, "auto")
    assert trainer.iteration == 2
    state = checkpoint_dir(run, 2) / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    capsys.readouterr()
    code = main([*TINY, f"log.run_dir={run}", "train.iterations=4", "--resume", "auto"])
    line = _error_line(capsys)
    assert code == EXIT_BAD_INPUT and "no intact checkpoint in" in line and "all 2 are corrupt" in line, line


def test_start_removes_stale_tmp_folders_of_killed_writes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main([*TINY, f"log.run_dir={run}", "train.iterations=1"]) == 0
    stale = run / "checkpoints" / "iter_000002.tmp-999999"
    stale.mkdir()
    (stale / "trainer_state.pt").write_bytes(b"half")
    with pytest.warns(UserWarning, match=r"removed 1 unfinished checkpoint write\(s\) of a killed run: "
                                         r"iter_000002.tmp-999999"):
        RLTrainer(load_config(TINY[1], [*TINY[2:], f"log.run_dir={run}", "train.iterations=2"])).train(
            resume="auto")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001", "iter_000002"]


def test_only_the_main_process_builds_the_checkpoint_state(tmp_path: Path, monkeypatch) -> None:
    import rlsd.trainer_state

    trainer = RLTrainer(_config(tmp_path / "run", "pretrain.enabled=false"))
    calls = []
    build = rlsd.trainer_state.trainer_state
    monkeypatch.setattr(rlsd.trainer_state, "trainer_state", lambda tr: calls.append("state") or build(tr))
    unet = trainer.model.unet
    state_dict = unet.state_dict
    monkeypatch.setattr(unet, "state_dict", lambda *a, **k: calls.append("weights") or state_dict(*a, **k))
    real = trainer.accelerator
    for main_process in (False, True):
        trainer.accelerator = SimpleNamespace(  # one rank of a 2-process DDP run
            is_main_process=main_process, num_processes=2, process_index=int(not main_process),
            distributed_type="MULTI_CPU", unwrap_model=real.unwrap_model, wait_for_everyone=lambda: None,
            device=real.device)
        rlsd.trainer_state.save_trainer_state(trainer)
        assert calls == (["weights", "state"] if main_process else []), main_process
        assert bool(list_checkpoints(tmp_path / "run")) == main_process


# ----------------------------------------------------------------------------------------------- real processes
KILL_POINTS = 10  # random kill -9 points, each resumed and compared bit for bit


def _start_cli(run: Path, *extra: str) -> subprocess.Popen:
    """``python -m rlsd.train`` of the resumable 4-iteration run, checkpointing every iteration."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "rlsd.train", "--config", TINY[1], *RESUMABLE, f"log.run_dir={run}",
           "train.iterations=4", "log.checkpoint_every=1", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until_training(proc: subprocess.Popen, run: Path) -> float:
    """Block until the first checkpoint exists (the loop runs, handlers are installed); returns the time."""
    deadline = time.monotonic() + 300
    while not (checkpoint_dir(run, 1) / "COMPLETE").is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no first checkpoint within 300 s"
        time.sleep(0.02)
    return time.monotonic()


def _resume_to_the_end(run: Path) -> dict:
    RLTrainer(_config(run, "train.iterations=4")).train(resume="auto")
    return _final_state(run)


@pytest.fixture(scope="module")
def cli_span(tmp_path_factory) -> float:
    """Seconds from the first checkpoint to the exit of an undisturbed CLI run."""
    run = tmp_path_factory.mktemp("span") / "run"
    proc = _start_cli(run)
    t0 = _wait_until_training(proc, run)
    assert proc.wait(timeout=300) == 0, proc.communicate()[1][-3000:]
    return time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:removed .* unfinished checkpoint write")
def test_kill_9_at_random_points_resumes_bit_identical(tmp_path: Path, straight, cli_span) -> None:
    rng = random.Random(0)
    for point in range(KILL_POINTS):
        run = tmp_path / f"run{point}"
        proc = _start_cli(run)
        delay = rng.uniform(0, cli_span)
        time.sleep(max(0.0, _wait_until_training(proc, run) + delay - time.monotonic()))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert_same_state(_resume_to_the_end(run), straight)


@pytest.mark.slow
def test_external_sigterm_exits_3_and_resumes_bit_identical(tmp_path: Path, straight, cli_span) -> None:
    run = tmp_path / "run"
    proc = _start_cli(run, "log.checkpoint_every=0")  # the only checkpoint will be the stop's
    deadline = time.monotonic() + 300
    while not (run / "metrics.csv").is_file() or len((run / "metrics.csv").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # the first iteration is logged: the loop runs
    _, err = proc.communicate(timeout=300)
    stopped = [line for line in err.splitlines() if line.startswith("stopped: ")]
    assert proc.returncode == EXIT_STOPPED and len(stopped) == 1 and err.strip().endswith(stopped[0]), err[-3000:]
    assert "SIGTERM received: stopped after iteration" in stopped[0] and "--resume auto" in stopped[0]
    iteration = list_checkpoints(run)[-1][0]
    assert 1 <= iteration < 4 and f"iteration {iteration} " in stopped[0]
    assert_same_state(_resume_to_the_end(run), straight)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_gloo_stop_ratio_max_and_main_only_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(REPO / "tests" / "dist_scripts" / "fault_check.py"),
           str(tmp_path), *RESUMABLE, "pretrain.enabled=false", f"log.run_dir={run}", "train.iterations=4",
           "log.checkpoint_every=3"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # SIGTERM reached rank 1 only, during iteration 1: both ranks finished it and stopped together
    assert [r["stopped_at"] for r in ranks] == [2, 2]
    assert [r["signal"] for r in ranks] == ["a stop signal (on another rank)", "SIGTERM"]
    assert [it for it, _ in list_checkpoints(run)] == [2] and checkpoint_problem(checkpoint_dir(run, 2)) is None
    # rank 1 alone deviates by 0.5: the logged value is the max over ranks (a mean would give about 0.25)
    assert all(r["ratio_first_abs_dev"] == [0.5, 0.5] for r in ranks), ranks
    # one checkpoint: built and copied by the main process only
    assert [r["counts"] for r in ranks] == [{"trainer_state": 1, "state_dict": 1},
                                            {"trainer_state": 0, "state_dict": 0}]
    # a check that fails on rank 1 only raises its message on both ranks (no rank left waiting)
    assert [r.get("check_error") for r in ranks] == ["rank 1 found NaN"] * 2


def test_sharded_engines_gather_the_weights_on_every_rank() -> None:
    from rlsd.distributed import model_state_on_main

    model = torch.nn.Linear(2, 2)
    for engine, config, collective in (("FSDP", None, True), ("DEEPSPEED", {"zero_optimization": {"stage": 3}}, True),
                                       ("DEEPSPEED", {"zero_optimization": {"stage": 2}}, False)):
        for main_process in (False, True):
            gathers = []
            acc = SimpleNamespace(distributed_type=engine, deepspeed_config=config, is_main_process=main_process,
                                  unwrap_model=lambda m: m,
                                  get_state_dict=lambda m: gathers.append(m) or m.state_dict())
            out = model_state_on_main(acc, model, ["weight"])
            assert len(gathers) == int(collective), (engine, config)  # a collective: every rank joins
            assert (out is None) != main_process and (out is None or list(out) == ["weight"])
