"""Explain under torchrun (2 ranks, gloo on CPU) on the toy world: disjoint shards, one exact merge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from vis_steer_lens.cli import main
from vis_steer_lens.distributed import World, contiguous_shard, current_world, shard
from vis_steer_lens.jsonl import read_jsonl
from vis_steer_lens.mining import MinedActivations

EXPLAIN = ["explain", "--features", "0:10", "--max-new-tokens", "6", "--batch-size", "3"]
#: Columns that differ between two runs of the same work (wall-clock timings).
TIMING = ["seconds"]


def _torchrun(run: Path, n_ranks: int = 2) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("vis-steer-lens")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_ranks}"]
    # "--" ends torchrun's own options: without it torchrun reads "--run" as its "--run-path".
    command += ["--no-python", "--", str(cli), "--quiet", *EXPLAIN, "--run", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("single")
    assert main(["--quiet", *EXPLAIN, "--run", str(run)]) == 0
    return run


def _rows(run: Path) -> list[dict]:
    return read_jsonl(run / "explanations" / "steering.jsonl", repair=False)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).drop(columns=TIMING).sort_values("feature").reset_index(drop=True)


@pytest.mark.slow
def test_two_ranks_write_each_feature_once_and_equal_one_process(one_process_run, tmp_path):
    done = _torchrun(tmp_path)
    rows = _rows(tmp_path)
    features = [row["feature"] for row in rows]
    assert sorted(features) == list(range(10)), features  # each feature once, none missing
    assert not (tmp_path / "explanations" / "steering.jsonl.shards").exists()  # merged and cleaned up
    pd.testing.assert_frame_equal(_frame(rows), _frame(_rows(one_process_run)))
    assert done.stdout.count("explanations written") == 1  # rank 0 reports, once


@pytest.mark.slow
def test_a_crashed_launch_resumes_from_its_shards(one_process_run, tmp_path):
    # A launch that died: rank 0's file has features 0-2, rank 1's shard has 3 and 4.
    reference = _rows(one_process_run)
    explanations = tmp_path / "explanations"
    explanations.mkdir()
    description = one_process_run / "explanations" / "steering.jsonl.run.json"
    shutil.copy(description, explanations / "steering.jsonl.run.json")
    shards = explanations / "steering.jsonl.shards"
    shards.mkdir()
    shutil.copy(description, shards / "rank-00001.jsonl.run.json")
    by_feature = {row["feature"]: {**row, "seconds": 1000.0 + row["feature"]} for row in reference}
    write = lambda path, ids: path.write_text("".join(json.dumps(by_feature[i]) + "\n" for i in ids))  # noqa: E731
    write(explanations / "steering.jsonl", [0, 1, 2])
    write(shards / "rank-00001.jsonl", [3, 4])

    _torchrun(tmp_path)
    rows = _rows(tmp_path)
    assert sorted(row["feature"] for row in rows) == list(range(10))
    kept = {row["feature"]: row["seconds"] for row in rows if row["seconds"] >= 1000}
    assert kept == {i: 1000.0 + i for i in range(5)}  # finished rows kept, not redone
    pd.testing.assert_frame_equal(_frame(rows), _frame(reference))


def test_shards_are_disjoint_and_cover_everything():
    items = list(range(23))
    for size in (1, 2, 3, 7):
        worlds = [World(rank=r, size=size) for r in range(size)]
        strided = [shard(items, w) for w in worlds]
        blocks = [list(contiguous_shard(len(items), w)) for w in worlds]
        for parts in (strided, blocks):
            assert sorted(i for part in parts for i in part) == items
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert [i for block in blocks for i in block] == items  # blocks in rank order are id order


def test_world_comes_from_the_launcher(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_world() == World(rank=1, size=2, local_rank=1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 does not fit WORLD_SIZE=2"):
        current_world()


MINE = ["mine", "--n-images", "40", "--batch-size", "6", "--k", "4"]


def _torchrun_mine(run: Path) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("vis-steer-lens")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["--no-python", "--", str(cli), "--quiet", *MINE, "--run", str(run)]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _assert_same_mining(ours: MinedActivations, reference: MinedActivations) -> None:
    for name in (
        "top_image_ids",
        "top_scores",
        "top_maps",
        "fire_images",
        "fire_patches",
        "max_act",
        "hist_counts",
        "hist_range",
    ):
        assert torch.equal(getattr(ours, name), getattr(reference, name)), name
    torch.testing.assert_close(ours.act_sum, reference.act_sum, rtol=1e-12, atol=0)  # summation order only
    assert ours.images_processed == reference.images_processed and ours.complete
    assert ours.meta.get("image_range") is None


@pytest.fixture(scope="module")
def one_process_mining(tmp_path_factory):
    run = tmp_path_factory.mktemp("single-mine")
    assert main(["--quiet", *MINE, "--run", str(run)]) == 0
    return MinedActivations.load(run / "mined")


def test_merged_blocks_equal_one_pass_with_skipped_images():
    from vis_steer_lens.mining.run import _mine_block
    from vis_steer_lens.testing import tiny_sae, tiny_vlm

    vlm = tiny_vlm("gemma3", seed=1)
    sae = tiny_sae(vlm, "blocks.1.hook_resid_post", d_sae=24, k=3)
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(17)]
    images[3] = images[11] = torch.zeros(3, 32, 32)  # ties: equal scores on two images in two blocks
    settings = dict(
        k=4, batch_size=3, rank_by="max", features=None, processor=None, hist_bins=16, checkpoint_every=5000
    )
    one = _mine_block(vlm, sae, images, out_dir=None, resume=True, progress=False, **settings)
    blocks = [contiguous_shard(len(images), World(rank=r, size=3)) for r in range(3)]
    parts = [
        _mine_block(vlm, sae, images, out_dir=None, resume=True, progress=False, image_range=b, **settings)
        for b in blocks
    ]
    _assert_same_mining(MinedActivations.merge(parts), one)
    with pytest.raises(ValueError, match="consecutive image ids"):
        MinedActivations.merge([parts[0], parts[2]])


@pytest.mark.slow
def test_two_ranks_mine_disjoint_blocks_and_merge_exactly(one_process_mining, tmp_path):
    _torchrun_mine(tmp_path)
    assert not (tmp_path / "mined" / "shards").exists()
    _assert_same_mining(MinedActivations.load(tmp_path / "mined"), one_process_mining)


@pytest.mark.slow
def test_a_crashed_ranks_mining_shard_resumes(one_process_mining, tmp_path):
    from vis_steer_lens import toy
    from vis_steer_lens.mining.run import _mine_block

    # Rank 1 (images 20..39) died after 10 images: its checkpoint has images 20..29.
    bundle = toy.load()
    images = toy.ToyImages(seed=1, n=40)  # the CLI's default --seed
    settings = dict(
        k=4, batch_size=6, rank_by="max", features=None, processor=None, hist_bins=50, checkpoint_every=5000
    )
    shard_dir = tmp_path / "mined" / "shards" / "rank-00001"
    partial = _mine_block(
        bundle.vlm,
        bundle.sae,
        images,
        out_dir=None,
        resume=True,
        progress=False,
        image_range=range(20, 30),
        **settings,
    )
    partial.meta["image_range"] = [20, 40]
    partial.save(shard_dir)
    assert not MinedActivations.load(shard_dir).complete
    _torchrun_mine(tmp_path)
    _assert_same_mining(MinedActivations.load(tmp_path / "mined"), one_process_mining)
