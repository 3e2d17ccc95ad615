"""Mining under bad image input: unreadable files are skipped, counted and named, resumes survive
deleted files and refuse changed ones, uint8 tensors are images, and the CLI checks what it can
before loading a model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from vis_steer_lens.image_sources import FolderImages, ListImages, NoReadableImageError
from vis_steer_lens.mining import LISTING_FILE, TOP_FILE, MinedActivations, mine_top_activations
from vis_steer_lens.store import ResumeMismatchError
from vis_steer_lens.testing import tiny_sae, tiny_vlm

HOOK = "blocks.1.hook_resid_post"
N_GOOD = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm("gemma3", seed=1)


@pytest.fixture(scope="module")
def sae(vlm):
    return tiny_sae(vlm, HOOK, d_sae=16, k=4, seed=2)


def _noise(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _good_folder(folder, n=N_GOOD):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        _noise(index).save(folder / f"{index:02d}.png")
    return folder


def _add_bad_files(folder):
    """Three unreadable files that sort between the good ones: ids 2, 5 and 8 of 11."""
    buffer = io.BytesIO()
    _noise(99).save(buffer, "JPEG")
    (folder / "01_truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (folder / "03_empty.png").write_bytes(b"")
    (folder / "05_text.png").write_text("a text file named .png")
    return {2: "01_truncated.jpg", 5: "03_empty.png", 8: "05_text.png"}


SETTINGS = dict(k=3, batch_size=4, progress=False)


def test_unreadable_images_are_skipped_counted_and_named(vlm, sae, tmp_path):
    """Today the first unreadable file ends the run with PIL's error."""
    clean = mine_top_activations(vlm, sae, _good_folder(tmp_path / "clean"), **SETTINGS)
    folder = _good_folder(tmp_path / "mixed")
    bad = _add_bad_files(folder)
    mined = mine_top_activations(vlm, sae, folder, out_dir=tmp_path / "out", **SETTINGS)
    assert [(item["index"], item["name"]) for item in mined.skipped_images] == sorted(bad.items())
    reasons = [item["reason"] for item in mined.skipped_images]
    assert "truncated" in reasons[0].lower() and "empty" in reasons[1] and "identify" in reasons[2]
    assert mined.images_processed == N_GOOD + 3 and mined.complete and mined.images_mined == N_GOOD
    # Skipped images keep their ids and enter no top-k; the good ones are mined as in a clean folder.
    kept = set(mined.top_image_ids[mined.top_image_ids >= 0].tolist())
    assert not kept & set(bad)
    good_ids = [i for i in range(N_GOOD + 3) if i not in bad]
    as_clean_ids = torch.tensor([-1] + good_ids)[clean.top_image_ids + 1]
    assert torch.equal(mined.top_image_ids, as_clean_ids)
    assert torch.allclose(mined.top_scores, clean.top_scores)
    # Frequencies are over the 8 images read, not the 11 of the source.
    for column in ("frac_images", "frac_nonzero", "mean_act", "n_images_seen"):
        assert np.allclose(mined.stats[column], clean.stats[column]), column
    assert mined.stats["n_images_seen"].iloc[0] == N_GOOD
    assert np.allclose(mined.stats["frac_images"], mined.fire_images.double().numpy() / N_GOOD)
    assert mined.live_features(0.5) == clean.live_features(0.5)
    # Saved and reloaded.
    loaded = MinedActivations.load(tmp_path / "out")
    assert loaded.skipped_images == mined.skipped_images and loaded.images_mined == N_GOOD
    info = json.loads((tmp_path / "out" / "mining.json").read_text())
    assert info["images_mined"] == N_GOOD and len(info["skipped_images"]) == 3
    # More slots than readable images: the unfilled ones stay empty, never a skipped id.
    few = _good_folder(tmp_path / "few", n=2)
    _add_bad_files(few)
    wide = mine_top_activations(vlm, sae, few, k=4, batch_size=2, progress=False)
    assert set(wide.top_image_ids.unique().tolist()) <= {-1, 0, 1}
    assert (wide.top_image_ids[:, 2:] == -1).all()


def test_nothing_readable_is_a_clear_error(vlm, sae, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        (folder / name).write_text("not an image")
    with pytest.raises(NoReadableImageError, match=r"None of the 3 images.*a\.png") as caught:
        mine_top_activations(vlm, sae, folder, out_dir=tmp_path / "out", checkpoint_every=1, **SETTINGS)
    assert isinstance(caught.value, ValueError)
    assert not (tmp_path / "out" / TOP_FILE).exists()  # no checkpoint of nothing to resume from


class CrashingFolder(FolderImages):
    """A folder whose image ``crash_at`` raises (a run killed in the middle)."""

    def __init__(self, path, crash_at: int) -> None:
        super().__init__(path)
        self.crash_at = crash_at

    def __getitem__(self, index: int):
        if index == self.crash_at:
            raise RuntimeError("simulated crash")
        return super().__getitem__(index)


def _interrupted_run(vlm, sae, folder, out):
    """A checkpoint after images 0-3 of the folder (the run dies reading image 5)."""
    with pytest.raises(RuntimeError, match="simulated crash"):
        mine_top_activations(vlm, sae, CrashingFolder(folder, 5), out_dir=out, checkpoint_every=4, **SETTINGS)
    assert MinedActivations.load(out).images_processed == 4 and (out / LISTING_FILE).is_file()


def test_a_checkpoint_resumes_after_files_were_deleted(vlm, sae, tmp_path):
    folder, out = _good_folder(tmp_path / "images"), tmp_path / "out"
    _interrupted_run(vlm, sae, folder, out)
    (folder / "01.png").unlink()  # mined already: it stays in the results
    (folder / "06.png").unlink()  # not mined yet: skipped, its id kept
    resumed = mine_top_activations(vlm, sae, folder, out_dir=out, **SETTINGS)
    assert resumed.complete and resumed.images_processed == N_GOOD and resumed.images_mined == N_GOOD - 1
    assert [(item["index"], item["name"]) for item in resumed.skipped_images] == [(6, "06.png")]
    assert "gone" in resumed.skipped_images[0]["reason"]
    assert 6 not in resumed.top_image_ids.tolist()
    # The same ids as an uninterrupted run over the folder with 06.png unreadable.
    reference_folder = _good_folder(tmp_path / "reference")
    (reference_folder / "06.png").write_bytes(b"")
    reference = mine_top_activations(vlm, sae, reference_folder, **SETTINGS)
    assert torch.equal(resumed.top_image_ids, reference.top_image_ids)
    assert torch.allclose(resumed.top_maps, reference.top_maps)
    assert torch.equal(resumed.fire_images, reference.fire_images)
    # Reopened in another process: the images are the ones mined, ids as listed then.
    loaded = MinedActivations.load(out)
    assert np.array_equal(np.asarray(loaded.image(7)), np.asarray(_noise(7)))


def test_a_changed_or_added_file_refuses_to_resume(vlm, sae, tmp_path):
    """Today the id hashed names only, so another image under the same name resumed silently."""
    folder, out = _good_folder(tmp_path / "images"), tmp_path / "out"
    _interrupted_run(vlm, sae, folder, out)
    _noise(123).resize((40, 40)).save(folder / "02.png")  # other contents, same name
    with pytest.raises(ResumeMismatchError, match=r"changed since it was mined.*1 changed \(02\.png\)"):
        mine_top_activations(vlm, sae, folder, out_dir=out, **SETTINGS)
    _noise(2).save(folder / "02.png")
    _noise(50).save(folder / "00a.png")
    with pytest.raises(ResumeMismatchError, match=r"1 changed \(02\.png\); 1 added \(00a\.png\)"):
        mine_top_activations(vlm, sae, folder, out_dir=out, **SETTINGS)
    (out / LISTING_FILE).unlink()  # without the listing: the source ids differ
    with pytest.raises(ResumeMismatchError, match="source_id"):
        mine_top_activations(vlm, sae, folder, out_dir=out, **SETTINGS)


def test_uint8_tensors_are_images_and_float_tensors_are_pixel_values(vlm, sae):
    """Today a uint8 tensor went to the tower unnormalised (activations 70x too large)."""
    pictures = [_noise(i) for i in range(4)]
    as_uint8 = [torch.from_numpy(np.asarray(p).copy()).permute(2, 0, 1) for p in pictures]
    from_pil = mine_top_activations(vlm, sae, ListImages(pictures, name="pil"), **SETTINGS)
    from_uint8 = mine_top_activations(vlm, sae, ListImages(as_uint8, name="u8"), **SETTINGS)
    assert torch.equal(from_uint8.top_image_ids, from_pil.top_image_ids)
    assert torch.allclose(from_uint8.top_maps, from_pil.top_maps, atol=1e-5)
    assert torch.allclose(from_uint8.max_act, from_pil.max_act, atol=1e-5)
    # A batch that mixes images and processed pixel values.
    processed = vlm.processor.image_processor(images=pictures[:2], return_tensors="pt")["pixel_values"]
    mixed = ListImages([processed[0], as_uint8[1], pictures[2], processed[1].clone()], name="mixed")
    mixed_mined = mine_top_activations(vlm, sae, mixed, k=3, batch_size=4, progress=False)
    expected = mine_top_activations(vlm, sae, ListImages(pictures[:3] + [pictures[1]], name="x"), **SETTINGS)
    assert torch.allclose(mixed_mined.max_act, expected.max_act, atol=1e-5)
    # Layouts and dtypes that are neither say what to do.
    with pytest.raises(ValueError, match=r"permute\(2, 0, 1\)"):
        mine_top_activations(vlm, sae, ListImages([as_uint8[0].permute(1, 2, 0)]), **SETTINGS)
    with pytest.raises(ValueError, match="must be floating .* or integer"):
        mine_top_activations(vlm, sae, ListImages([as_uint8[0].bool()]), **SETTINGS)
    # Any integer tensor is an image, as uint8 is (issue 23: int64 was refused with advice that misled).
    from_int64 = mine_top_activations(
        vlm, sae, ListImages([t.long() for t in as_uint8], name="i64"), **SETTINGS
    )
    assert torch.equal(from_int64.top_image_ids, from_uint8.top_image_ids)
    assert torch.equal(from_int64.max_act, from_uint8.max_act)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pixel_tensors_mine(vlm, sae, dtype):
    pixels = [torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)).to(dtype) for i in range(3)]
    source = ListImages(pixels, name="half")
    assert source.source_id != ListImages([p.float() for p in pixels], name="half").source_id
    assert mine_top_activations(vlm, sae, source, **SETTINGS).images_mined == 3


def test_an_empty_feature_list_is_refused(vlm, sae):
    with pytest.raises(ValueError, match="empty"):
        mine_top_activations(vlm, sae, [_noise(0)], features=[], **SETTINGS)


def test_mined_files_follow_the_umask(vlm, sae, tmp_path):
    previous = os.umask(0o027)
    try:
        mine_top_activations(
            vlm, sae, _good_folder(tmp_path / "images", n=2), out_dir=tmp_path / "out", **SETTINGS
        )
    finally:
        os.umask(previous)
    files = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert files == sorted(["features.parquet", "image_listing.parquet", "mining.json", "top.safetensors"])
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name


# ---- the command line -------------------------------------------------------------------------


def _cli_error(argv) -> str:
    """The one ``error: ...`` line of a user error (exit status 2)."""
    from vis_steer_lens.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2, err.getvalue()
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    return lines[0]


def test_cli_mine_checks_its_arguments_before_loading_a_model(tmp_path, monkeypatch):
    """Today --out and --n-images were checked after the model and SAE were loaded."""
    import vis_steer_lens.cli as cli

    def no_model(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "load_model_and_sae", no_model)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in _cli_error(["--quiet", "mine", "--out", str(a_file), "--n-images", "4"])
    assert "--n-images: must be an integer >= 1, got '0'" in _cli_error(
        ["--quiet", "mine", "--out", str(tmp_path / "o"), "--n-images", "0"]
    )
    assert "--k-images: must be an integer >= 1" in _cli_error(
        ["--quiet", "mine", "--out", str(tmp_path / "o"), "--k-images", "0"]
    )
    missing = _cli_error(
        ["--quiet", "mine", "--out", str(tmp_path / "o"), "--images", str(tmp_path / "nope")]
    )
    assert "no local folder" in missing
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root ignores permissions
            assert "Cannot write" in _cli_error(["--quiet", "mine", "--out", str(locked / "out")])
    finally:
        locked.chmod(0o700)


def test_cli_mine_names_the_skipped_images(tmp_path, capsys):
    from vis_steer_lens.cli import main
    from vis_steer_lens.toy import ToyImages

    folder = tmp_path / "images"
    folder.mkdir()
    toy = ToyImages(seed=0, n=6)
    for index in range(6):
        toy[index].save(folder / f"{index}.png")
    shutil.copy(folder / "0.png", folder / "0_copy.png")
    _add_bad_files(folder)
    assert (
        main(
            ["--quiet", "mine", "--images", str(folder), "--out", str(tmp_path / "out"), "--batch-size", "4"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "over 7 images" in printed
    assert "skipped 3 unreadable image(s): 01_truncated.jpg, 03_empty.png, 05_text.png" in printed
