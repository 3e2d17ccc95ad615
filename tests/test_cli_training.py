"""`vis-steer-lens cache` and `train` on the toy world: the run's activations and SAE folders, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from vis_steer_lens.cli import main

HOOK = "blocks.2.hook_resid_post"


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    stderr = capsys.readouterr().err
    message = stderr.strip().splitlines()[-1]  # status lines ("Loading ...") may come before it
    assert message.startswith("error:") and "Traceback" not in stderr
    return message


@pytest.mark.slow
def test_cache_then_train_a_two_by_two_grid(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "--quiet",
                "cache",
                "--run",
                str(run),
                "--hooks",
                HOOK,
                "--n-images",
                "60",
                "--images-per-shard",
                "20",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert "Cached 960 rows" in said and "images/s" in said
    manifest = json.loads((run / "activations" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["hooks"] == [HOOK] and manifest["images_done"] == 60
    argv = ["--quiet", "train", "--run", str(run), "--hook", HOOK, "--widths", "32,64", "--k", "4,8"]
    argv += ["--training-tokens", "512", "--batch-size", "128", "--eval-images", "8", "--loss-images", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 4 and all("loss recovered" in line for line in printed)
    for name in ("topk-w32-k4", "topk-w32-k8", "topk-w64-k4", "topk-w64-k8"):
        sae = SAE.load_from_disk(str(run / "saes" / name))
        assert sae.cfg.metadata.training_report["mean_l0"] == pytest.approx(int(name[-1]))
    assert set(json.loads((run / "saes" / "grid.json").read_text())) == {
        "topk-w32-k4",
        "topk-w32-k8",
        "topk-w64-k4",
        "topk-w64-k8",
    }


def test_bad_grids_fail_in_one_line_before_the_model_loads(tmp_path, capsys):
    base = ["train", "--run", str(tmp_path), "--hook", HOOK, "--training-tokens", "1000"]
    assert "integers >= 1" in _error(capsys, [*base, "--widths", "256,x", "--k", "8"])
    assert "k=300 is above width=256" in _error(capsys, [*base, "--widths", "256", "--k", "300"])


def test_an_empty_cache_and_an_unknown_hook_fail_in_one_line(tmp_path, capsys):
    (tmp_path / "activations").mkdir()
    (tmp_path / "activations" / "manifest.json").write_text(
        json.dumps({"version": 1, "hooks": [HOOK], "shards": []})
    )
    argv = [
        "train",
        "--run",
        str(tmp_path),
        "--hook",
        HOOK,
        "--widths",
        "32",
        "--k",
        "4",
        "--training-tokens",
        "512",
    ]
    assert "holds no rows" in _error(capsys, argv)
    message = _error(
        capsys, ["cache", "--run", str(tmp_path / "other"), "--hooks", "blocks.9.hook_resid_post"]
    )
    assert "blocks.9.hook_resid_post" in message


@pytest.mark.slow
def test_cache_under_torchrun_writes_the_shards_of_one_process(tmp_path):
    argv = ["cache", "--hooks", HOOK, "--n-images", "50", "--images-per-shard", "10", "--batch-size", "4"]
    assert main(["--quiet", *argv, "--run", str(tmp_path / "one")]) == 0
    cli = Path(sys.executable).with_name("vis-steer-lens")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
    ]
    command += ["--", str(cli), "--quiet", *argv, "--run", str(tmp_path / "two")]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("Cached 800 rows") == 1  # rank 0 reports, once
    one, two = tmp_path / "one" / "activations", tmp_path / "two" / "activations"
    files = sorted(p.relative_to(one) for p in one.rglob("shard-*.npy"))
    assert len(files) == 10  # 5 shards, the hook and the index
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    manifests = [json.loads((root / "manifest.json").read_text()) for root in (one, two)]
    assert manifests[0]["shards"] == manifests[1]["shards"] and manifests[1]["complete"]


@pytest.mark.slow
def test_train_under_torchrun_splits_the_grid_and_writes_the_saes_of_one_process(tmp_path):
    cache = ["--quiet", "cache", "--hooks", HOOK, "--n-images", "40", "--images-per-shard", "10"]
    train = ["--quiet", "train", "--hook", HOOK, "--widths", "32", "--k", "4,8", "--training-tokens", "256"]
    train += ["--batch-size", "64", "--eval-images", "4", "--loss-images", "0"]
    for run in ("one", "two"):
        assert main([*cache, "--run", str(tmp_path / run)]) == 0
    assert main([*train, "--run", str(tmp_path / "one")]) == 0
    cli = Path(sys.executable).with_name("vis-steer-lens")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
    ]
    command += ["--", str(cli), *train, "--run", str(tmp_path / "two")]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("topk-w32-k4", "topk-w32-k8"):  # one grid point per rank, each as one process trains it
        ours, theirs = (SAE.load_from_disk(str(tmp_path / run / "saes" / name)) for run in ("one", "two"))
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(theirs.state_dict()[key], value, rtol=0, atol=0)
    assert set(json.loads((tmp_path / "two" / "saes" / "grid.json").read_text())) == {
        "topk-w32-k4",
        "topk-w32-k8",
    }
