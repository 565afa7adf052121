"""L_pre streams: per-rank shares, parquet read by row group, centre crop, and the stream position across resume."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlsd.pretrain_data import build_pretrain_source, load_image

SIZES = [(20, 12), (12, 20), (16, 16), (25, 9), (9, 9), (14, 30)]  # (W, H), mostly non-square


def _png(index: int, size: tuple[int, int]) -> bytes:
    """A flat image whose red channel encodes ``index`` (decoded back by :func:`_index_of`)."""
    buf = io.BytesIO()
    Image.new("RGB", size, (10 * index, 0, 255)).save(buf, format="PNG")
    return buf.getvalue()


def _index_of(image: torch.Tensor) -> int:
    return round(float(image[0].mean()) * 255 / 10)


def write_parquet(path: Path, num_rows: int, row_group_size: int, *, hf_structs: bool = False) -> Path:
    """``num_rows`` rows (image i, caption "row i") in row groups of ``row_group_size``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [_png(i, SIZES[i % len(SIZES)]) for i in range(num_rows)]
    column = [{"bytes": b, "path": None} for b in images] if hf_structs else images
    pq.write_table(pa.table({"image": column, "text": [f"row {i}" for i in range(num_rows)]}), path,
                   row_group_size=row_group_size)
    return path


def parquet_spec(path: Path) -> dict:
    return {"name": "parquet", "path": str(path), "caption_column": "text"}


def folder_spec(root: Path, num_rows: int) -> dict:
    root.mkdir()
    for i in range(num_rows):
        (root / f"{i}.png").write_bytes(_png(i, SIZES[i % len(SIZES)]))
    (root / "captions.jsonl").write_text("\n".join(json.dumps({"file": f"{i}.png", "caption": f"row {i}"})
                                                  for i in range(num_rows)))
    return {"name": "folder", "path": str(root)}


@pytest.fixture
def decodes(monkeypatch) -> Counter:
    """Counts ``PIL.Image.open`` calls (one per decoded image) under the key "open"."""
    counter: Counter = Counter()
    real_open = Image.open

    def counting_open(*args, **kwargs):
        counter["open"] += 1
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return counter


def test_centre_crop_keeps_the_middle_square_of_a_non_square_image() -> None:
    wide = np.zeros((10, 30, 3), np.uint8)  # three 10x10 squares side by side: red | green | blue
    wide[:, :10, 0], wide[:, 10:20, 1], wide[:, 20:, 2] = 255, 255, 255
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, format="PNG")
    out = load_image(buf.getvalue(), 16)
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(out[1], torch.ones(16, 16))  # only the green middle survives (a squash keeps all 3)
    assert float(out[0].max()) == 0 and float(out[2].max()) == 0
    tall = np.random.default_rng(0).integers(0, 256, (31, 10, 3), dtype=np.uint8)  # odd margin: 21 rows -> top 10
    buf = io.BytesIO()
    Image.fromarray(tall).save(buf, format="PNG")
    expected = Image.fromarray(tall[10:20]).resize((7, 7), Image.BICUBIC)
    torch.testing.assert_close(load_image(buf.getvalue(), 7),
                               torch.from_numpy(np.asarray(expected, np.float32) / 255).permute(2, 0, 1))


def test_parquet_is_read_by_row_group_one_at_a_time(tmp_path: Path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    path = write_parquet(tmp_path / "d.parquet", num_rows=10, row_group_size=3)  # groups of 3, 3, 3, 1
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read the whole parquet file"))
    reads, real_read = [], pq.ParquetFile.read_row_group

    def spy(self, i, *args, **kwargs):
        table = real_read(self, i, *args, **kwargs)
        reads.append((i, table.num_rows, tuple(table.column_names)))
        return table

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    stream = build_pretrain_source(parquet_spec(path), image_size=8, seed=1)
    assert reads == []  # opening reads only the footer metadata
    images, captions = stream.next_batch(2)
    assert images.shape == (2, 3, 8, 8) and len(reads) in (1, 2)
    assert all(rows <= 3 and cols == ("image", "text") for _, rows, cols in reads)
    assert stream._cached[1].num_rows <= 3  # one row group in memory, not the file
    for _ in range(4):
        stream.next_batch(2)
    assert sorted(i for i, _, _ in reads) == [0, 1, 2, 3]  # one epoch of 10 rows reads each group once


@pytest.mark.parametrize("hf_structs", [False, True])
def test_parquet_epoch_visits_every_row_once_and_keeps_pairs(tmp_path: Path, hf_structs: bool) -> None:
    path = write_parquet(tmp_path / "d.parquet", num_rows=12, row_group_size=5, hf_structs=hf_structs)
    stream = build_pretrain_source(parquet_spec(path), image_size=8, seed=0)
    epoch = [stream.next_batch(4) for _ in range(3)]
    captions = [c for _, caps in epoch for c in caps]
    assert sorted(captions) == sorted(f"row {i}" for i in range(12))
    assert captions != [f"row {i}" for i in range(12)]  # shuffled
    for images, caps in epoch:
        assert [f"row {_index_of(im)}" for im in images] == caps
    second = stream.next_batch(12)[1]  # the next epoch is another permutation of all rows
    assert sorted(second) == sorted(captions) and second != captions


@pytest.mark.parametrize("kind", ["parquet", "folder", "shapesworld"])
@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_shares_are_the_single_process_batch(tmp_path: Path, decodes: Counter, kind: str,
                                                  world_size: int) -> None:
    """Concatenated in rank order, the shares equal one process's batches (across an epoch boundary), and each
    rank decodes only its own n / world_size images."""
    spec = {"parquet": lambda: parquet_spec(write_parquet(tmp_path / "d.parquet", 10, 3)),
            "folder": lambda: folder_spec(tmp_path / "f", 10),
            "shapesworld": lambda: {"name": "shapesworld"}}[kind]()
    n, steps = 8, 3
    single = build_pretrain_source(spec, image_size=8, seed=4)
    whole = [single.next_batch(n) for _ in range(steps)]
    ranks = [build_pretrain_source(spec, image_size=8, seed=4) for _ in range(world_size)]
    for images, captions in whole:
        parts = []
        for r, stream in enumerate(ranks):
            before = decodes["open"]
            parts.append(stream.next_batch(n, rank=r, world_size=world_size))
            assert decodes["open"] - before == (n // world_size if kind != "shapesworld" else 0)
        assert torch.equal(torch.cat([im for im, _ in parts]), images)
        assert [c for _, caps in parts for c in caps] == captions
    assert all(s.state_dict() == single.state_dict() for s in ranks)  # every rank's position is the global one


def test_stream_position_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    from rlsd.checkpoint import load_checkpoint, save_checkpoint

    spec = parquet_spec(write_parquet(tmp_path / "d.parquet", 10, 3))
    straight = build_pretrain_source(spec, image_size=8, seed=2)
    expected = [straight.next_batch(4) for _ in range(5)]
    first = build_pretrain_source(spec, image_size=8, seed=2)
    for _ in range(2):
        first.next_batch(4, rank=1, world_size=2)
    save_checkpoint(tmp_path / "ckpt", {"pretrain": first.state_dict()})
    resumed = build_pretrain_source(spec, image_size=8, seed=2)
    resumed.load_state_dict(load_checkpoint(tmp_path / "ckpt")["pretrain"])
    assert resumed.state_dict() == {"seed": 2, "position": 8, "num_rows": 10}
    for images, captions in expected[2:]:  # crosses the epoch boundary at position 10
        got = resumed.next_batch(4)
        assert torch.equal(got[0], images) and got[1] == captions


def test_parquet_resume_refuses_another_dataset_or_the_old_state(tmp_path: Path) -> None:
    stream = build_pretrain_source(parquet_spec(write_parquet(tmp_path / "d.parquet", 10, 3)), image_size=8)
    with pytest.raises(ValueError, match="seed 0 over 9 rows, but pretrain.dataset gives seed 0 over 10"):
        stream.load_state_dict({"seed": 0, "position": 4, "num_rows": 9})
    with pytest.raises(ValueError, match="no parquet stream position"):
        stream.load_state_dict({"seed": 0, "batch_index": 3})


def test_parquet_folder_of_shards_is_one_dataset(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    write_parquet(tmp_path / "a.parquet", 7, 3)
    table = pq.read_table(write_parquet(tmp_path / "tmp.parquet", 12, 3)).slice(7)  # rows 7..11
    (tmp_path / "tmp.parquet").unlink()
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=2)
    stream = build_pretrain_source(parquet_spec(tmp_path), image_size=8)
    assert stream.num_rows == 12 and len(stream.groups) == 3 + 3
    assert sorted(stream.next_batch(12)[1]) == sorted(f"row {i}" for i in range(12))


def test_parquet_bad_input_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a parquet file nor a folder"):
        build_pretrain_source({"name": "parquet", "path": str(tmp_path / "missing.parquet")}, image_size=8)
    path = write_parquet(tmp_path / "d.parquet", 4, 2)
    with pytest.raises(ValueError, match="no column 'caption'.*caption_column"):
        build_pretrain_source({"name": "parquet", "path": str(path)}, image_size=8)
    stream = build_pretrain_source(parquet_spec(path), image_size=8)
    with pytest.raises(ValueError, match="batch 3 not divisible by world size 2; set pretrain.batch_size"):
        stream.next_batch(3, rank=0, world_size=2)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_decode_their_share_and_resume_from_a_checkpoint(tmp_path: Path) -> None:
    """tests/dist_scripts/pretrain_shares.py under a real 2-process launch: per batch of 8 each rank decodes 4
    images, the ranks' shares concatenated are the single-process batches (no row duplicated or skipped), and
    the stream restored from a checkpoint written by the main process continues identically on both ranks."""
    import os
    import subprocess
    import sys

    from rlsd.distributed import free_port

    sys.path.insert(0, str(Path(__file__).parent / "dist_scripts"))
    try:
        from pretrain_shares import N, RESUME_AT, SEED, SIZE, STEPS
    finally:
        sys.path.pop(0)
    repo = Path(__file__).resolve().parents[1]
    spec = parquet_spec(write_parquet(tmp_path / "d.parquet", num_rows=10, row_group_size=3))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()),
           str(repo / "tests" / "dist_scripts" / "pretrain_shares.py"), json.dumps(spec), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]  # both processes really ran
    assert all(r["decodes"] == [N // 2] * STEPS for r in ranks)
    single = build_pretrain_source(spec, image_size=SIZE, seed=SEED)
    for k in range(STEPS):
        images, captions = single.next_batch(N)
        assert torch.equal(torch.cat([r["images"][k] for r in ranks]), images)
        assert ranks[0]["captions"][k] + ranks[1]["captions"][k] == captions
    for r in ranks:
        assert r["state"] == single.state_dict()
        assert all(torch.equal(a, b) for a, b in zip(r["resumed_images"], r["images"][RESUME_AT:]))
        assert r["resumed_captions"] == r["captions"][RESUME_AT:]


TRAINER = [  # tiny pixel model (16 px), 2 prompts x 2 images, L_pre batch 4 from a 10-row parquet (crosses epochs)
    "model.path=tiny-pixel", "sample.num_steps=3", "sample.num_prompts_per_iter=2", "tasks.0.group_size=2",
    "train.timesteps_per_iter=2", "train.lr=1e-3", "train.clip_range=0.2", "pretrain.enabled=true",
    "pretrain.batch_size=4", "log.image_every=0", "log.export=false", "log.progress=false", "log.checkpoint_every=2"]


def _trainer_overrides(data: Path, run_dir: Path, iterations: int) -> list[str]:
    return [*TRAINER, f"pretrain.dataset={{name: parquet, path: '{data}', caption_column: text}}",
            f"log.run_dir={run_dir}", f"train.iterations={iterations}"]


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from rlsd.checkpoint import latest_checkpoint, load_checkpoint

    state = load_checkpoint(latest_checkpoint(run_dir))
    assert state["iteration"] == 4 and state["pretrain"]["position"] == 16
    return state["model_state"]


@pytest.mark.slow
def test_trainer_resume_with_parquet_lpre_is_bit_identical(tmp_path: Path) -> None:
    from rlsd.config import load_config
    from rlsd.models import build_tiny_pixel_model
    from rlsd.trainer import RLTrainer

    data = write_parquet(tmp_path / "d.parquet", num_rows=10, row_group_size=3)
    straight = RLTrainer(load_config("configs/tiny_sd_smoke.yaml", _trainer_overrides(data, tmp_path / "a", 4)))
    straight.train()
    RLTrainer(load_config("configs/tiny_sd_smoke.yaml", _trainer_overrides(data, tmp_path / "b", 2))).train()
    resumed = RLTrainer(load_config("configs/tiny_sd_smoke.yaml", _trainer_overrides(data, tmp_path / "b", 4)))
    resumed.train(resume="auto")
    assert resumed.pretrain.state_dict() == straight.pretrain.state_dict() == {"seed": 0, "position": 16,
                                                                               "num_rows": 10}
    a, b = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    init = build_tiny_pixel_model(seed=0).unet.state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)  # training really moved the weights


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_trainer_resume_with_parquet_lpre_is_bit_identical(tmp_path: Path) -> None:
    """2 gloo ranks, each decoding its 2 of the 4 L_pre images per iteration: 4 iterations straight equal 2,
    a checkpoint, and 2 more in a new launch, bit for bit."""
    import os
    import subprocess

    from rlsd.train import launch_command

    repo = Path(__file__).resolve().parents[1]
    data = write_parquet(tmp_path / "d.parquet", num_rows=10, row_group_size=3)
    for name, iterations, resume in (("a", 4, None), ("b", 2, None), ("b", 4, "auto")):
        cmd, env = launch_command("configs/tiny_sd_smoke.yaml", _trainer_overrides(data, tmp_path / name, iterations),
                                  num_processes=2, resume=resume)
        env = dict(env, OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
