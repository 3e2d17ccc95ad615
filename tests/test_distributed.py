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

from vis_steer_lens.cli import main
from vis_steer_lens.distributed import World, contiguous_shard, current_world, shard
from vis_steer_lens.jsonl import read_jsonl

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
