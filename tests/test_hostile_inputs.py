"""Issue 23's hostile inputs: nothing silently wrong, nothing stuck (one test per case)."""

from __future__ import annotations

import copy
import errno
import json

import pandas as pd
import pytest
import torch
from test_cli import cli_error

from vis_steer_lens import RunFolder
from vis_steer_lens.cli import main


@pytest.fixture(scope="module")
def toy_bundle():
    from vis_steer_lens import toy

    return toy.load()


def _saved_sae(toy_bundle, folder, edit=None):
    """The toy SAE, edited in place by ``edit(sae)``, saved in SAELens format to ``folder``."""
    sae = copy.deepcopy(toy_bundle.sae)
    if edit is not None:
        with torch.no_grad():
            edit(sae)
    sae.save_model(str(folder))
    return folder


def _mine(run, *extra):
    return ["--quiet", "mine", "--run", str(run), "--n-images", "16", "--batch-size", "16", *extra]


# ---------------------------------------------------------------- SAE weights that are NaN or inf


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda sae: sae.W_enc[:, 3].fill_(float("nan")), "feature(s) 3 of 1024"),
        (lambda sae: sae.W_enc[5, 7].fill_(float("inf")), "feature(s) 7 of 1024"),
        (lambda sae: sae.b_enc.fill_(float("nan")), "every feature is affected"),
        (lambda sae: sae.b_dec[0].fill_(float("nan")), "b_dec"),
    ],
    ids=["nan-encoder-column", "inf-weight", "all-nan-encoder-bias", "nan-shared-bias"],
)
def test_mine_refuses_an_sae_with_non_finite_weights(toy_bundle, tmp_path, edit, said):
    folder = _saved_sae(toy_bundle, tmp_path / "sae", edit)
    message = cli_error(main, _mine(tmp_path / "run", "--sae", str(folder)))
    assert "NaN or inf" in message and said in message
    assert not (tmp_path / "run" / "mined" / "top.safetensors").exists()


def test_non_finite_features_can_be_left_out_and_are_said_to_be(toy_bundle, tmp_path, capsys):
    folder = _saved_sae(toy_bundle, tmp_path / "sae", lambda sae: sae.W_enc[:, 3].fill_(float("nan")))
    assert main(_mine(tmp_path / "run", "--sae", str(folder), "--drop-nonfinite-features")) == 0
    assert "left out 1 feature(s) with NaN or inf weights: 3" in capsys.readouterr().out
    stats = RunFolder(tmp_path / "run").mined().stats.set_index("feature")
    assert stats.loc[3, "frac_nonzero"] == 0  # never fires
    assert torch.isfinite(torch.tensor(stats.select_dtypes("number").to_numpy())).all()


def test_explainers_and_scorers_refuse_a_non_finite_sae_naming_the_feature(toy_bundle):
    from vis_steer_lens.evaluate import GenerationAUROCScorer
    from vis_steer_lens.explain import SteeringExplainer
    from vis_steer_lens.saes import NonFiniteSAEError
    from vis_steer_lens.toy import ToyGenerator

    sae = copy.deepcopy(toy_bundle.sae)
    with torch.no_grad():
        sae.W_dec[11, 0] = float("nan")  # a NaN decoder row: steering it would give garbage
    with pytest.raises(NonFiniteSAEError, match=r"feature\(s\) 11 of"):
        SteeringExplainer(toy_bundle.vlm, sae, coefficient=1.0, prompt="toy")
    with pytest.raises(NonFiniteSAEError, match=r"feature\(s\) 11 of"):
        GenerationAUROCScorer(toy_bundle.vlm, sae, ToyGenerator(), [])


def test_load_sae_checks_finiteness_even_without_a_model(toy_bundle, tmp_path):
    from vis_steer_lens import load_sae
    from vis_steer_lens.saes import NonFiniteSAEError

    folder = _saved_sae(toy_bundle, tmp_path / "sae", lambda sae: sae.W_dec[2].fill_(float("-inf")))
    with pytest.raises(NonFiniteSAEError, match=str(folder)):
        load_sae(folder)
    sae = load_sae(folder, nonfinite="drop")
    assert sae.cfg.metadata["dropped_features"] == [2]
    assert torch.isfinite(sae.W_dec).all()


def test_an_sae_whose_config_and_weights_disagree_is_named(toy_bundle, tmp_path):
    folder = _saved_sae(toy_bundle, tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_sae"] = 512
    (folder / "cfg.json").write_text(json.dumps(cfg))
    message = cli_error(main, _mine(tmp_path / "run", "--sae", str(folder)))
    assert str(folder) in message and "disagree" in message and "size mismatch" in message


# ---------------------------------------------------------------- one run folder, one SAE


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """A toy run with steering and topk explanations of 4 features, steering scored with 30 negatives."""
    root = tmp_path_factory.mktemp("run23")
    steps = [
        ["mine", "--run", str(root), "--n-images", "60", "--batch-size", "60"],
        ["explain", "--run", str(root), "--features", "0:4", "--coefficient", "100", "--max-new-tokens", "8"],
        ["explain", "--run", str(root), "--method", "topk", "--features", "0:4", "--max-new-tokens", "8"],
        ["evaluate", "--run", str(root), "--n-reference", "30", "--n-generated", "2"],
    ]
    for step in steps:
        assert main(["--quiet", *step]) == 0, step
    return RunFolder(root)


@pytest.mark.parametrize("command", ["explain", "evaluate", "mine"])
def test_a_run_refuses_a_second_sae_naming_both(toy_bundle, scored_run, tmp_path, command):
    other = _saved_sae(toy_bundle, tmp_path / "other", lambda sae: sae.W_enc.mul_(1.01))
    argv = {
        "explain": ["explain", "--run", str(scored_run.root), "--features", "0:2", "--coefficient", "1"],
        "evaluate": ["evaluate", "--run", str(scored_run.root), "--n-reference", "10"],
        "mine": ["mine", "--run", str(scored_run.root), "--n-images", "10"],
    }[command]
    before = sorted(p.name for p in scored_run.root.rglob("*"))
    message = cli_error(main, ["--quiet", *argv, "--sae", str(other)])
    owner = json.loads(scored_run.owner_path.read_text())
    assert "a run holds one SAE" in message and owner["sae_id"] in message
    from vis_steer_lens.saes import load_sae, sae_identity

    assert sae_identity(load_sae(other)) in message
    assert sorted(p.name for p in scored_run.root.rglob("*")) == before  # nothing written


def test_scoring_another_method_with_other_negatives_leaves_the_first_unchanged(scored_run, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(scored_run.root, root)
    run = RunFolder(root)
    from vis_steer_lens.evaluate.compare import compare_run

    before = compare_run(run, write=False).table.set_index("method_label").loc["steering"]
    argv = ["--quiet", "evaluate", "--run", str(root), "--method", "topk", "--n-reference", "12"]
    assert main([*argv, "--n-generated", "2"]) == 0
    table = compare_run(run).table.set_index("method_label")
    pd.testing.assert_series_equal(table.loc["steering"], before)
    assert len(list(run.scores_dir.glob("reference.generation_auroc.n*.safetensors"))) == 2
    scores = run.scored()[0]
    assert set(scores.groupby("method")["n_negatives"].first().items()) == {("steering", 30), ("topk", 12)}
    # the same method with other negatives is refused, naming the setting
    message = cli_error(
        main, ["--quiet", "evaluate", "--run", str(root), "--n-reference", "12", "--n-generated", "2"]
    )
    assert "reference" in message and "n30-" in message and "n12-" in message


def test_an_old_run_with_one_unkeyed_reference_still_reads(scored_run, tmp_path):
    """Runs written before reference sets were keyed (and the demo's) hold reference.<scorer>.safetensors
    and rows without a ``reference`` setting."""
    import shutil

    from vis_steer_lens.evaluate.compare import compare_run
    from vis_steer_lens.jsonl import read_jsonl, write_jsonl

    root = tmp_path / "old"
    shutil.copytree(scored_run.root, root)
    run = RunFolder(root)
    keyed = next(run.scores_dir.glob("reference.generation_auroc.n*.safetensors"))
    keyed.rename(run.reference_path())
    path = run.scores_path("steering")
    write_jsonl(path, [{k: v for k, v in row.items() if k != "reference"} for row in read_jsonl(path)])
    description = path.with_name(path.name + ".run.json")
    settings = json.loads(description.read_text())
    del settings["reference"]
    description.write_text(json.dumps(settings))
    new = compare_run(scored_run, write=False).table
    old = compare_run(run, write=False).table
    pd.testing.assert_frame_equal(old, new)
    # evaluate resumes such a method against its unkeyed reference: nothing rescored, no new set
    rows = path.read_text()
    assert main(["--quiet", "evaluate", "--run", str(root), "--n-reference", "30", "--n-generated", "2"]) == 0
    assert path.read_text() == rows
    assert not list(run.scores_dir.glob("reference.generation_auroc.n*.safetensors"))


def test_a_run_refuses_a_model_with_another_tower(tmp_path):
    from conftest import build_tiny_toy_vlm, random_sae

    from vis_steer_lens.runs import RunOwnerError

    sae = random_sae(d_in=32, d_sae=12, hook_name="blocks.1.hook_resid_post")
    run = RunFolder(tmp_path / "run")
    run.claim(sae, build_tiny_toy_vlm(seed=0))
    run.claim(sae, build_tiny_toy_vlm(seed=0))  # the same again is fine
    other = build_tiny_toy_vlm(seed=1)
    with pytest.raises(RunOwnerError, match="a run holds one model") as err:
        run.claim(sae, other)
    assert json.loads(run.owner_path.read_text())["tower_fingerprint"] in str(err.value)
    assert other.vision.tower_fingerprint() in str(err.value)


# ---------------------------------------------------------------- damaged files, a full disk, locks


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["sae_weights.safetensors", "cfg.json"])
def test_a_truncated_sae_file_is_named(toy_bundle, tmp_path, name):
    folder = _saved_sae(toy_bundle, tmp_path / "sae")
    _truncate(folder / name)
    message = cli_error(main, _mine(tmp_path / "run", "--sae", str(folder)))
    assert str(folder / name) in message and "damaged or truncated" in message


def test_truncated_mined_images_and_reference_are_named(scored_run, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(scored_run.root, root)
    run = RunFolder(root)
    _truncate(run.mined_dir / "top.safetensors")
    argv = ["--quiet", "explain", "--run", str(root), "--method", "topk", "--features", "0:6"]
    message = cli_error(main, argv)
    assert str(run.mined_dir / "top.safetensors") in message and "run mine again" in message
    reference = next(run.scores_dir.glob("reference.*.safetensors"))
    _truncate(reference)
    message = cli_error(main, ["compare", str(root)])
    assert str(reference) in message and "evaluate" in message


def test_a_full_disk_at_mining_s_final_save_names_the_file_and_keeps_the_last_state(tmp_path, monkeypatch):
    import vis_steer_lens.mining as mining

    run = tmp_path / "run"
    assert main(_mine(run)) == 0  # a finished mining, to be kept whole
    before = {p.name: p.read_bytes() for p in (run / "mined").iterdir()}

    def full_disk(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"x" * 100)  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mining.persistence, "save_file", full_disk)
    message = cli_error(main, _mine(run))  # the rerun's final save fails: the saved state is kept
    assert str(run / "mined" / "top.safetensors") in message
    message = cli_error(main, _mine(tmp_path / "run2"))
    assert str(tmp_path / "run2" / "mined" / "top.safetensors") in message
    assert "No space left on device" in message and "free some space" in message
    assert not list((tmp_path / "run2" / "mined").glob(".*.tmp"))  # no temporary file left
    assert {p.name: p.read_bytes() for p in (run / "mined").iterdir()} == before


def test_a_safetensors_full_disk_error_is_named_too(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own error type, with the errno in its text."""
    import vis_steer_lens.mining as mining

    class SafetensorError(Exception):
        pass

    def full_disk(tensors, path, metadata=None):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(mining.persistence, "save_file", full_disk)
    message = cli_error(main, _mine(tmp_path / "run"))
    assert "top.safetensors" in message and "No space left on device" in message


def test_mining_saves_what_it_has_before_it_fails(toy_bundle, tmp_path, monkeypatch):
    import vis_steer_lens.mining as mining
    from vis_steer_lens.mining.state import _STATE_TENSORS
    from vis_steer_lens.toy import ToyImages

    images = ToyImages(seed=5, n=48)
    clean = mining.mine_top_activations(
        toy_bundle.vlm, toy_bundle.sae, images, k=3, batch_size=16, progress=False
    )
    real, calls = mining.run.hook_activations, []

    def fails_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*args, **kwargs)

    monkeypatch.setattr(mining.run, "hook_activations", fails_on_the_third_batch)
    out = tmp_path / "mined"
    with pytest.raises(RuntimeError, match="illegal memory"):
        mining.mine_top_activations(
            toy_bundle.vlm, toy_bundle.sae, images, k=3, batch_size=16, out_dir=out, progress=False
        )
    saved = mining.MinedActivations.load(out)
    assert saved.images_processed == 32 and not saved.complete
    monkeypatch.setattr(mining.run, "hook_activations", real)
    resumed = mining.mine_top_activations(
        toy_bundle.vlm, toy_bundle.sae, images, k=3, batch_size=16, out_dir=out, progress=False
    )
    assert calls == [1, 1, 1]  # the first two batches were not mined again
    for name in _STATE_TENSORS:
        assert torch.allclose(getattr(resumed, name), getattr(clean, name)), name


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage"], ids=["empty", "unreadable"])
def test_an_empty_or_unreadable_lock_is_stale(tmp_path, content):
    from vis_steer_lens.store import ResultsStore

    path = tmp_path / "rows.jsonl"
    path.with_name("rows.jsonl.lock").write_bytes(content)
    with ResultsStore(path, {"a": 1}) as store:
        store.append([{"feature": 0}])
    assert not path.with_name("rows.jsonl.lock").exists()


def test_a_full_disk_while_taking_the_lock_leaves_no_lock(tmp_path, monkeypatch):
    import os

    from vis_steer_lens.atomic import FileWriteError
    from vis_steer_lens.store import ResultsStore

    real = os.fdopen

    def full_disk(fd, *args, **kwargs):
        handle = real(fd, *args, **kwargs)

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def write(self, text):
                raise OSError(errno.ENOSPC, "No space left on device")

            def flush(self):
                pass

        return Full()

    path = tmp_path / "rows.jsonl"
    monkeypatch.setattr(os, "fdopen", full_disk)
    with pytest.raises(FileWriteError, match="rows.jsonl.lock"):
        ResultsStore(path, {"a": 1})
    monkeypatch.setattr(os, "fdopen", real)
    assert not path.with_name("rows.jsonl.lock").exists()
    with ResultsStore(path, {"a": 1}) as store:  # the next run is not refused
        store.append([{"feature": 0}])


# ---------------------------------------------------------------- a crashed launch, rerun in one process


def test_a_one_process_rerun_merges_a_crashed_launch_s_rank_files(tmp_path):
    from vis_steer_lens.jsonl import read_jsonl

    explain = ["--quiet", "explain", "--features", "0:8", "--max-new-tokens", "6", "--coefficient", "100"]
    reference = tmp_path / "reference"
    assert main([*explain, "--run", str(reference)]) == 0
    rows = {
        r["feature"]: {**r, "seconds": 1000.0 + r["feature"]}
        for r in read_jsonl(reference / "explanations" / "steering.jsonl")
    }
    # The launch died: rank 0's rows are in the results file, rank 1's in its shard.
    folder = tmp_path / "run" / "explanations"
    shards = folder / "steering.jsonl.shards"
    shards.mkdir(parents=True)
    description = (reference / "explanations" / "steering.jsonl.run.json").read_text()
    (folder / "steering.jsonl.run.json").write_text(description)
    (shards / "rank-00001.jsonl.run.json").write_text(description)
    (folder / "steering.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in (0, 2)))
    (shards / "rank-00001.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in (1, 3, 5)))
    assert main([*explain, "--run", str(tmp_path / "run")]) == 0
    merged = read_jsonl(folder / "steering.jsonl")
    assert sorted(r["feature"] for r in merged) == list(range(8))
    assert {r["feature"] for r in merged if r["seconds"] >= 1000} == {0, 1, 2, 3, 5}  # none redone
    assert not shards.exists()


def test_a_one_process_rerun_finishes_a_crashed_launch_s_mining(toy_bundle, tmp_path):
    from vis_steer_lens.mining import MinedActivations
    from vis_steer_lens.mining.run import _mine_block
    from vis_steer_lens.toy import ToyImages

    mine = ["--quiet", "mine", "--n-images", "24", "--batch-size", "6", "--k", "3"]
    assert main([*mine, "--run", str(tmp_path / "reference")]) == 0
    expected = MinedActivations.load(tmp_path / "reference" / "mined")
    # A 2-rank launch died: rank 0 started (its folder is there), rank 1 checkpointed images 12..17.
    shards = tmp_path / "run" / "mined" / "shards"
    (shards / "rank-00000").mkdir(parents=True)
    settings = dict(
        k=3, batch_size=6, rank_by="max", features=None, processor=None, hist_bins=50, checkpoint_every=5000
    )
    partial = _mine_block(
        toy_bundle.vlm,
        toy_bundle.sae,
        ToyImages(seed=1, n=24),
        out_dir=None,
        resume=True,
        progress=False,
        image_range=range(12, 18),
        **settings,
    )
    partial.meta["image_range"] = [12, 24]
    partial.save(shards / "rank-00001")
    assert main([*mine, "--run", str(tmp_path / "run")]) == 0
    ours = MinedActivations.load(tmp_path / "run" / "mined")
    assert not shards.exists() and ours.complete and ours.meta.get("image_range") is None
    for name in (
        "top_image_ids",
        "top_scores",
        "top_maps",
        "fire_images",
        "fire_patches",
        "max_act",
        "hist_counts",
    ):
        assert torch.equal(getattr(ours, name), getattr(expected, name)), name


# ---------------------------------------------------------------- the dashboard of any run


def test_the_dashboard_works_on_a_run_with_explanations_but_no_mined_images(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--quiet", "explain", "--run", str(run), "--features", "0:3", "--coefficient", "100"]
    assert main([*argv, "--max-new-tokens", "6"]) == 0
    assert main(["--quiet", "dashboard", str(run)]) == 0
    assert "Dashboard:" in capsys.readouterr().out
    from vis_steer_lens.dashboard.html import read_feature_data

    pages = read_feature_data(run / "dashboard")
    assert sorted(pages) == [0, 1, 2]
    data = pages[0]
    assert data["explanations"][0]["method_label"] == "steering" and data["top"] == []
    message = cli_error(main, ["dashboard", str(tmp_path / "empty"), "--out", str(tmp_path / "d")])
    assert "does not exist" in message
    (tmp_path / "empty").mkdir()
    assert "holds nothing to show yet" in cli_error(main, ["dashboard", str(tmp_path / "empty")])


# ---------------------------------------------------------------- one rule for pixel tensors


def _toy_images(n=3):
    from vis_steer_lens.toy import ToyImages

    images = ToyImages(seed=9, n=n)
    return [images[i] for i in range(n)]


def _as_uint8(image):
    import numpy as np

    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous()


def test_integer_tensors_are_images_for_hookedvlm_and_hookedvit(toy_bundle):
    from vis_steer_lens.activations import image_processor_of, to_pixel_values

    vlm = toy_bundle.vlm
    pictures = _toy_images()
    processed = to_pixel_values(pictures, image_processor_of(vlm))
    expected = vlm.encode_images(processed)
    raw = torch.stack([_as_uint8(p) for p in pictures])
    for dtype in (torch.uint8, torch.int64, torch.int32):
        torch.testing.assert_close(vlm.encode_images(raw.to(dtype)), expected)
        torch.testing.assert_close(vlm.vision(raw.to(dtype)), vlm.vision(processed))


def test_a_hookedvit_without_a_processor_refuses_integer_tensors_with_advice_that_works(toy_bundle):
    from transformers import AutoImageProcessor

    from vis_steer_lens import HookedViT
    from vis_steer_lens.activations import PixelValuesError
    from vis_steer_lens.toy.loading import toy_model_path

    vit = HookedViT.from_hf(toy_bundle.vlm.adapter.tower(toy_bundle.vlm.hf_model))
    raw = torch.stack([_as_uint8(p) for p in _toy_images()])
    with pytest.raises(PixelValuesError, match="no image processor") as err:
        vit(raw)
    assert "vit.image_processor = AutoImageProcessor.from_pretrained" in str(err.value)
    vit.image_processor = AutoImageProcessor.from_pretrained(str(toy_model_path()))
    torch.testing.assert_close(vit(raw), toy_bundle.vlm.vision(raw))


def test_float_tensors_of_raw_pixels_are_refused_with_advice_that_works(toy_bundle):
    from vis_steer_lens.activations import PixelValuesError
    from vis_steer_lens.mining import mine_top_activations

    vlm, sae = toy_bundle.vlm, toy_bundle.sae
    raw = torch.stack([_as_uint8(p) for p in _toy_images()])
    for call in (
        lambda x: vlm.vision(x),
        lambda x: vlm.encode_images(x),
        lambda x: mine_top_activations(vlm, sae, list(x), k=2, progress=False),
    ):
        with pytest.raises(PixelValuesError, match=r"like raw 0\.\.255 pixels") as err:
            call(raw.float())
        assert ".round().clamp(0, 255).to(torch.uint8)" in str(err.value)
    fixed = raw.float().round().clamp(0, 255).to(torch.uint8)  # the advice, followed
    torch.testing.assert_close(vlm.encode_images(fixed), vlm.encode_images(raw))
    ours = mine_top_activations(vlm, sae, list(fixed.to(torch.int64)), k=2, progress=False)
    theirs = mine_top_activations(vlm, sae, _toy_images(), k=2, progress=False)
    assert torch.equal(ours.top_image_ids, theirs.top_image_ids) and len(ours.live_features()) > 0
    torch.testing.assert_close(ours.max_act, theirs.max_act)


# ---------------------------------------------------------------- odd file names, dataset ids offline


def test_an_image_file_name_that_is_not_utf8_is_skipped_and_named(tmp_path, capsys, caplog):
    import os

    folder = tmp_path / "images"
    folder.mkdir()
    for i, picture in enumerate(_toy_images(3)):
        picture.save(folder / f"ok-{i}.png")
    _toy_images(1)[0].save(os.fsdecode(bytes(folder) + b"/caf\xe9.png"))  # latin-1 bytes, not UTF-8
    run = tmp_path / "run"
    assert main(["--quiet", "mine", "--run", str(run), "--images", str(folder), "--batch-size", "4"]) == 0
    assert "over 3 images" in capsys.readouterr().out
    assert "caf\\xe9.png (its name is not UTF-8; rename it to read it)" in caplog.text
    assert json.loads((run / "mined" / "mining.json").read_text())["n_images"] == 3


def test_a_dataset_id_fails_fast_and_in_one_line_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    import socket
    import time

    pytest.importorskip("datasets")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as on a user's machine with no network
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.perf_counter()
    message = cli_error(main, ["mine", "--run", str(tmp_path), "--images", "nobody-x/nothing-y"])
    assert time.perf_counter() - start < 20
    assert "'nobody-x/nothing-y'" in message and "cannot be reached" in message and "local folder" in message
    assert constants.HF_HUB_OFFLINE is False  # offline mode was only for the attempt


@pytest.mark.parametrize("command", ["explain", "evaluate"])
def test_explain_and_evaluate_refuse_a_nan_decoder_row_naming_it_not_the_coefficient(
    toy_bundle, tmp_path, command
):
    folder = _saved_sae(toy_bundle, tmp_path / "sae", lambda sae: sae.W_dec[4].fill_(float("nan")))
    explanations = tmp_path / "explanations.csv"
    pd.DataFrame({"feature": [4], "explanation": ["red circle"], "method": "steering"}).to_csv(explanations)
    argv = {
        "explain": ["explain", "--features", "0:8", "--coefficient", "10", "--run", str(tmp_path / "run")],
        "evaluate": ["evaluate", "--explanations", str(explanations), "--out", str(tmp_path / "ev")],
    }[command]
    message = cli_error(main, ["--quiet", *argv, "--sae", str(folder)])
    assert "feature(s) 4 of 1024" in message and "coefficient" not in message


def test_a_full_disk_while_appending_explanations_is_one_line_and_leaves_no_lock(tmp_path, monkeypatch):
    import os

    import vis_steer_lens.jsonl as jsonl

    class FullDisk:  # appending rows fails; every other use of os is the real one
        def __getattr__(self, name):
            return getattr(os, name)

        def fsync(self, fd):
            raise OSError(errno.ENOSPC, "No space left on device")

    argv = ["--quiet", "explain", "--run", str(tmp_path), "--features", "0:2", "--coefficient", "100"]
    monkeypatch.setattr(jsonl, "os", FullDisk())
    message = cli_error(main, [*argv, "--max-new-tokens", "6"])
    assert str(tmp_path / "explanations" / "steering.jsonl") in message and "No space left" in message
    assert "[Errno" not in message
    monkeypatch.setattr(jsonl, "os", os)
    assert not (tmp_path / "explanations" / "steering.jsonl.lock").exists()
    assert main([*argv, "--max-new-tokens", "6"]) == 0  # the rerun is not refused


def test_a_write_that_fails_midway_leaves_the_previous_file(scored_run, tmp_path, monkeypatch):
    import shutil

    from vis_steer_lens.atomic import FileWriteError
    from vis_steer_lens.evaluate.compare import compare_run

    root = tmp_path / "copy"
    shutil.copytree(scored_run.root, root)
    run = RunFolder(root)
    compare_run(run)
    before = run.comparison_path.read_bytes()
    real = pd.DataFrame.to_csv

    def torn(self, path, *args, **kwargs):
        real(self.head(0), path, *args, **kwargs)  # a header lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", torn)
    with pytest.raises(FileWriteError, match="comparison.csv"):
        compare_run(run)
    assert run.comparison_path.read_bytes() == before
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_scorers_take_integer_tensors_as_images(toy_bundle):
    from vis_steer_lens.activations import PixelValuesError
    from vis_steer_lens.evaluate.encoding import SAEImageEncoder

    encoder = SAEImageEncoder(toy_bundle.vlm, toy_bundle.sae)
    pictures = _toy_images()
    expected = encoder(pictures)
    torch.testing.assert_close(encoder([_as_uint8(p).long() for p in pictures]), expected)
    with pytest.raises(PixelValuesError, match="raw 0..255"):
        encoder([_as_uint8(p).float() for p in pictures])


def test_a_run_from_before_run_json_belongs_to_the_sae_of_its_explanations(toy_bundle, scored_run, tmp_path):
    import shutil

    root = tmp_path / "old"
    shutil.copytree(scored_run.root / "explanations", root / "explanations")  # no run.json, no mined/
    other = _saved_sae(toy_bundle, tmp_path / "other", lambda sae: sae.W_enc.mul_(1.01))
    argv = ["--quiet", "explain", "--run", str(root), "--method", "steering", "--features", "0:2"]
    message = cli_error(main, [*argv, "--coefficient", "1", "--sae", str(other)])
    assert "a run holds one SAE" in message and not (root / "run.json").exists()


def test_evaluate_reads_an_explanations_file_with_a_torn_last_line(tmp_path):
    rows = [
        {"feature": f, "explanation": "red circle", "method": "steering", "direction": "sae"} for f in (0, 1)
    ]
    path = tmp_path / "steering.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"feature": 2, "expla')
    argv = ["--quiet", "evaluate", "--explanations", str(path), "--out", str(tmp_path / "ev")]
    assert main([*argv, "--n-reference", "20", "--n-generated", "2"]) == 0
    assert pd.read_csv(tmp_path / "ev" / "scores.csv")["feature"].tolist() == [0, 1]


def test_a_folder_written_by_a_library_is_replaced_whole_or_not_at_all(tmp_path):
    from vis_steer_lens.atomic import FileWriteError, atomic_folder

    target = tmp_path / "sae"
    with atomic_folder(target) as tmp:
        (tmp / "cfg.json").write_text("old")
        (tmp / "sae_weights.safetensors").write_bytes(b"old")
    with pytest.raises(FileWriteError, match=str(target)), atomic_folder(target) as tmp:
        (tmp / "cfg.json").write_text("new")
        raise OSError(errno.ENOSPC, "No space left on device")  # the weights never got written
    assert (target / "cfg.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no temporary folder left
