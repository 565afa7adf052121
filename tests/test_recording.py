"""rlsd.recording: CSV + tensorboard, resume truncation, image grids, save_figure sidecar."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from rlsd.recording import RunLogger, captioned_grid, image_grid, read_metrics, save_figure  # noqa: E402


def test_scalars_go_to_csv_and_tensorboard(tmp_path):
    cfg = {"train": {"lr": 2e-6, "clip_range": 1e-4, "folder": Path("/x")}, "tasks": ("a", "b")}
    with RunLogger(tmp_path, config=cfg) as log:
        log.log_scalars(0, {"loss/ppo": 0.5, "reward/count/mean": torch.tensor(0.25)})
        log.log_scalars(1, {"loss/ppo": 0.4, "ppo/clipfrac": 0.1, "lr": 2e-6})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {
        "train": {"lr": 2e-6, "clip_range": 1e-4, "folder": "/x"},
        "tasks": ["a", "b"],
    }
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    wide = read_metrics(tmp_path)
    assert list(wide.index) == [0, 1]
    assert set(wide.columns) == {"loss/ppo", "reward/count/mean", "ppo/clipfrac", "lr"}
    assert wide.loc[1, "loss/ppo"] == pytest.approx(0.4)
    assert wide.loc[0, "reward/count/mean"] == pytest.approx(0.25)
    assert np.isnan(wide.loc[0, "ppo/clipfrac"])
    assert wide.loc[1, "lr"] == 2e-6  # repr keeps full precision


def test_tensorboard_holds_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path) as log:
        for step in range(3):
            log.log_scalars(step, {"loss/ppo": float(step)})
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("loss/ppo")] == [0.0, 1.0, 2.0]


def test_resume_truncates_and_appends(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in range(5):
            log.log_scalars(step, {"loss/ppo": float(step)})
    with RunLogger(tmp_path, resume_step=2) as log:  # crashed after step 4, resumed from checkpoint 2
        for step in (3, 4):
            log.log_scalars(step, {"loss/ppo": 10.0 + step})
    long = (tmp_path / "metrics.csv").read_text().splitlines()
    assert long[0] == "step,key,value" and len(long) == 1 + 5  # no duplicated rows
    assert read_metrics(tmp_path)["loss/ppo"].tolist() == [0.0, 1.0, 2.0, 13.0, 14.0]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()  # reads both event files; the purge event drops the stale steps 3 and 4
    assert [(e.step, e.value) for e in acc.Scalars("loss/ppo")] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]


def test_disabled_logger_writes_nothing(tmp_path):
    run = tmp_path / "run"
    log = RunLogger(run, enabled=False, config={"a": 1})
    log.log_scalars(0, {"x": 1.0})
    assert log.log_images(0, torch.zeros(1, 3, 4, 4)) is None
    log.close()
    assert not run.exists()


def test_log_images_writes_grid_and_captions(tmp_path):
    images = torch.zeros(3, 3, 8, 8)
    images[1, 0] = 1.0  # a red image
    with RunLogger(tmp_path, tensorboard=False) as log:
        out = log.log_images(7, images, captions=["a", "b", "c"], tag="eval/samples")
        plain = log.log_images(8, images, tag="eval/plain")
    assert out == tmp_path / "images" / "eval_samples_000007.png"
    png = np.asarray(Image.open(out))
    # ceil(sqrt(3)) = 2 per row; each 8 px image upscaled 16x to 128 px, 2 px frame, caption lines below
    cell_w = 128 + 4
    assert png.shape[1] == 2 * cell_w and png.shape[0] > 2 * cell_w
    assert (png[2:130, cell_w + 2 : cell_w + 130] == [255, 0, 0]).all()  # the red image, second cell
    cell_h = png.shape[0] // 2
    assert (png[130:cell_h, 2:130] < 128).any()  # caption text under the first image
    assert (png[cell_h + 130 :, cell_w:] == 255).all()  # the empty fourth cell is white
    assert out.with_suffix(".txt").read_text() == "a\nb\nc\n"
    plain_png = np.asarray(Image.open(plain))
    assert plain_png.shape == (2 + 2 * 10, 2 + 2 * 10, 3)  # no captions: the exact tiling
    assert plain_png[2:10, 12:20].tolist() == [[[255, 0, 0]] * 8] * 8


def test_captioned_grid_needs_one_caption_per_image():
    with pytest.raises(ValueError, match="one per image"):
        captioned_grid(torch.zeros(2, 3, 8, 8), ["only one"])


def test_image_grid_layout_and_errors():
    imgs = torch.rand(5, 3, 4, 6)
    grid = image_grid(imgs, nrow=5, padding=1)
    assert grid.shape == (6, 1 + 5 * 7, 3) and grid.dtype == np.uint8
    expected = (imgs[4].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(grid[1:5, 29:35], expected)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        image_grid(torch.rand(3, 4, 4))


def _figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def test_save_figure_outside_repo(tmp_path):
    fig = _figure()
    paths = save_figure(fig, "curve", params={"lr": 2e-6, "seed": 0}, data_source="runs/x", out_dir=tmp_path)
    plt.close(fig)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
    meta = json.loads(paths["json"].read_text())
    assert meta["git_commit"] == "unknown" and meta["git_dirty"] is None
    assert meta["params"] == {"lr": 2e-6, "seed": 0} and meta["data_source"] == "runs/x"
    assert meta["files"] == ["curve.png", "curve.pdf"] and "created_utc" in meta


def test_save_figure_records_commit(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "f.txt").write_text("x")
    subprocess.run([*git, "add", "f.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    fig = _figure()
    meta_path = save_figure(fig, "f", params={}, data_source="d", out_dir=tmp_path / "figures")["json"]
    plt.close(fig)
    meta = json.loads(meta_path.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"]) and meta["git_commit"] == head
    assert meta["git_dirty"] is False


def test_save_figure_dirty_flag_is_measured_before_overwriting_a_tracked_figure(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    fig = _figure()
    save_figure(fig, "f", params={}, data_source="d", out_dir=tmp_path / "figures")
    subprocess.run([*git, "add", "figures"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=tmp_path, check=True)
    fig.axes[0].plot([0, 1], [1, 0])  # a changed figure overwrites the tracked files
    meta_path = save_figure(fig, "f", params={}, data_source="d", out_dir=tmp_path / "figures")["json"]
    plt.close(fig)
    assert json.loads(meta_path.read_text())["git_dirty"] is False
    status = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "f.png" in status  # the overwrite happened, and a second save would now see a dirty tree
    meta_path = save_figure(fig, "f", params={}, data_source="d", out_dir=tmp_path / "figures")["json"]
    assert json.loads(meta_path.read_text())["git_dirty"] is True

def test_reward_curves_smooth_long_series_but_not_a_few_eval_points():
    import pandas as pd

    from rlsd.plotting import reward_curves

    metrics = pd.DataFrame({"reward/a/mean": np.arange(30.0)}, index=np.arange(1, 31))
    metrics["eval/b/mean"] = np.where(metrics.index % 10 == 0, [float(i) for i in range(30)], np.nan)
    fig = reward_curves(metrics, {"train": "reward/a/mean", "eval": "eval/b/mean"}, smooth=5)
    train_ax, eval_ax = fig.axes
    assert len(train_ax.lines) == 2  # raw + rolling mean
    assert len(eval_ax.lines) == 1  # 3 points: a 5-wide window would draw their mean as a flat line
    np.testing.assert_array_equal(eval_ax.lines[0].get_ydata(), [9.0, 19.0, 29.0])
    plt.close(fig)


def test_print_table_prints_and_writes_the_same_table(tmp_path, capsys) -> None:
    import pandas as pd

    from rlsd.recording import print_table

    table = pd.DataFrame({"split": ["train", "held-out"], "change": [0.012345, -0.5]})
    print_table(table, tmp_path / "t.csv", digits=3)
    out = capsys.readouterr().out
    assert "0.0123" in out and "-0.5" in out and "held-out" in out
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), table)
