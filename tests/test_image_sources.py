"""Image sources under bad input: unreadable files, 16-bit and transparent images, links, changed
contents, and ``--images`` strings naming folders, saved datasets and Hugging Face datasets.

Nothing here touches the network: hub loads go to a monkeypatched ``datasets.load_dataset``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import numpy as np
import pytest
from PIL import Image

from vis_steer_lens.image_sources import (
    DatasetImages,
    FolderImages,
    ImageSourceError,
    UnreadableImageError,
    as_image_source,
    open_image_source,
    open_images,
    to_rgb,
)


def _jpeg_bytes(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _color_png(path, color=(200, 30, 30), size=8):
    Image.new("RGB", (size, size), color).save(path)


# ---- conversion -------------------------------------------------------------------------------


def test_a_sixteen_bit_png_keeps_its_levels(tmp_path):
    """Today's ``convert("RGB")`` clips 16-bit levels to 0..255: a gradient became 2-5 levels."""
    gradient = np.linspace(0, 65535, 16 * 64).round().astype(np.uint16).reshape(16, 64)
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as opened:
        assert opened.mode == "I;16"
    image = FolderImages(tmp_path)[0]
    assert image.mode == "RGB"
    levels = np.asarray(image)
    assert len(np.unique(levels)) >= 250  # the 8-bit range, not 0 and 255
    eight_bit = (gradient >> 8).astype(np.int16)  # the 8-bit version of the same gradient
    assert np.abs(levels[..., 0].astype(np.int16) - eight_bit).max() <= 1
    assert np.array_equal(levels[..., 0], levels[..., 2])  # gray stays gray
    # Mode "I" (how older Pillow opens 16-bit PNGs) is read as the same 0..65535 levels.
    as_int = Image.fromarray(gradient.astype(np.int32))
    assert as_int.mode == "I" and np.array_equal(np.asarray(to_rgb(as_int)), levels)
    # An 8-bit image stored as 16 bits (level x 257) comes back exactly.
    exact = np.arange(256, dtype=np.uint16).reshape(4, 64) * 257
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(exact)))[..., 1], exact // 257)


def test_transparent_and_palette_images_are_composited_on_white():
    """Transparency is composited on white; today it was dropped (a transparent red pixel stayed red)."""
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    out = np.asarray(to_rgb(rgba))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 1])
    la = Image.new("LA", (1, 1), (0, 0))
    assert np.asarray(to_rgb(la))[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # palette entry 0 is transparent
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 255, 255], [200, 0, 0]]]
    opaque = Image.new("P", (1, 1), 0)
    opaque.putpalette([10, 20, 30] + [0] * 765)
    assert np.asarray(to_rgb(opaque)).tolist() == [[[10, 20, 30]]]
    for mode in ("1", "L", "CMYK", "YCbCr", "I;16", "F"):
        assert to_rgb(Image.new(mode, (3, 2))).mode == "RGB", mode
    source = Image.new("RGB", (1, 1), (1, 2, 3))
    assert to_rgb(source) is not source  # a copy: callers may close the original


# ---- unreadable files -------------------------------------------------------------------------


def test_unreadable_files_raise_an_error_naming_them(tmp_path):
    data = _jpeg_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image at all")
    _color_png(tmp_path / "good.png")
    _color_png(tmp_path / "later_deleted.png")
    folder = FolderImages(tmp_path)
    names = [folder.image_name(i) for i in range(len(folder))]
    assert names == ["empty.png", "good.png", "later_deleted.png", "notes.png", "truncated.jpg"]
    (tmp_path / "later_deleted.png").unlink()
    reasons = {}
    for index, name in enumerate(names):
        if name == "good.png":
            assert folder[index].mode == "RGB"
            continue
        with pytest.raises(UnreadableImageError) as caught:
            folder[index]
        assert isinstance(caught.value, ValueError)
        assert caught.value.name == name and caught.value.index == index and name in str(caught.value)
        reasons[name] = caught.value.reason
    assert "empty" in reasons["empty.png"]
    assert "gone" in reasons["later_deleted.png"]
    assert "identify" in reasons["notes.png"]
    assert "truncated" in reasons["truncated.jpg"]


# ---- folders: links and contents --------------------------------------------------------------


def test_linked_folders_are_followed_once_and_loops_are_reported(tmp_path, caplog):
    """Today rglob drops a linked folder silently (its images were never mined) and loops too."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    _color_png(root / "real" / "a.png")
    _color_png(root / "top.png")
    _color_png(outside / "b.png")
    os.symlink(outside, root / "linked")  # a folder elsewhere: followed
    os.symlink(root / "real", root / "again")  # a second way into a folder: not followed twice
    os.symlink(root, root / "real" / "loop")  # a loop back to the root
    os.symlink(root / "missing.png", root / "broken.png")  # a broken link
    os.symlink("self.png", root / "self.png")  # a link to itself
    with caplog.at_level(logging.WARNING, logger="vis_steer_lens.image_sources"):
        folder = FolderImages(root)
    assert [folder.image_name(i) for i in range(len(folder))] == ["linked/b.png", "real/a.png", "top.png"]
    not_listed = {item["name"]: item["reason"] for item in folder.not_listed}
    assert set(not_listed) == {"again", "real/loop", "broken.png", "self.png"}
    assert "loop" in not_listed["real/loop"] and "already listed" in not_listed["again"]
    assert "broken" in not_listed["broken.png"] and "itself" in not_listed["self.png"]
    assert "4 entries not listed" in caplog.text and "real/loop" in caplog.text
    described = json.loads(json.dumps(folder.describe()))
    assert described["n_not_listed"] == 4 and {item["name"] for item in described["not_listed"]} == set(
        not_listed
    )
    assert open_image_source(described).source_id == folder.source_id
    assert folder[0].getpixel((0, 0)) == (200, 30, 30)


def test_the_source_id_covers_each_files_size_and_mtime(tmp_path):
    """Today the id hashed names only: other contents under the same names resumed silently."""
    for index in range(3):
        _color_png(tmp_path / f"{index}.png", color=(index * 50, 0, 0))
    folder = FolderImages(tmp_path)
    assert FolderImages(tmp_path).source_id == folder.source_id  # stable while nothing changes
    # Other contents of another size.
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
        tmp_path / "1.png"
    )
    rewritten = FolderImages(tmp_path)
    assert rewritten.source_id != folder.source_id
    assert rewritten.changes_since(folder.entries) == {"removed": [], "added": [], "changed": ["1.png"]}
    with pytest.raises(UnreadableImageError, match="changed after the folder was listed"):
        folder[1]  # the old listing never reads the new bytes as the old image
    # Same size, new mtime (the same bytes written again count as a change too).
    stats = (tmp_path / "2.png").stat()
    os.utime(tmp_path / "2.png", ns=(stats.st_atime_ns, stats.st_mtime_ns + 1_000_000_000))
    assert FolderImages(tmp_path).source_id != rewritten.source_id


# ---- --images strings -------------------------------------------------------------------------


@pytest.fixture
def datasets_module():
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets


def _tiny_dataset(datasets, n=3, column="image"):
    images = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(n)]
    features = datasets.Features({column: datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({column: images, "label": list(range(n))}, features=features)


def test_images_strings_name_folders_and_saved_datasets(tmp_path, datasets_module):
    datasets = datasets_module
    (tmp_path / "pictures").mkdir()
    _color_png(tmp_path / "pictures" / "a.png")
    assert isinstance(open_images(tmp_path / "pictures"), FolderImages)
    assert isinstance(as_image_source(str(tmp_path / "pictures")), FolderImages)

    _tiny_dataset(datasets).save_to_disk(tmp_path / "saved")
    saved = as_image_source(str(tmp_path / "saved"))
    assert isinstance(saved, DatasetImages) and len(saved) == 3
    reopened = open_image_source(json.loads(json.dumps(saved.describe())))
    assert reopened.source_id == saved.source_id
    assert np.array_equal(np.asarray(reopened[2]), np.asarray(saved[2]))

    splits = datasets.DatasetDict({"train": _tiny_dataset(datasets, 3), "test": _tiny_dataset(datasets, 2)})
    splits.save_to_disk(tmp_path / "splits")
    assert len(open_images(tmp_path / "splits")) == 3  # default split: train
    test = open_images(f"{tmp_path / 'splits'}:test")
    assert len(test) == 2 and test.describe()["split"] == "test"
    assert open_image_source(test.describe()).source_id == test.source_id
    with pytest.raises(ImageSourceError, match="no split 'valid'.*splits: \\['train', 'test'\\]"):
        open_images(f"{tmp_path / 'splits'}:valid")
    with pytest.raises(ImageSourceError, match="not a dataset saved with save_to_disk"):
        open_images(f"{tmp_path / 'pictures'}:train")

    # A column named otherwise is found by its feature type.
    pictures = DatasetImages(_tiny_dataset(datasets, 2, column="picture"))
    assert pictures.column == "picture" and pictures[1].size == (8, 8)

    # Broken bytes in a dataset row: an UnreadableImageError naming the row and its file.
    broken = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"junk", "path": "bad.png"}]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    with pytest.raises(UnreadableImageError, match="bad.png"):
        DatasetImages(broken)[0]

    for missing in ("./no/such/folder", str(tmp_path / "nope")):
        with pytest.raises(ImageSourceError, match="no local folder and no Hugging Face dataset id"):
            open_images(missing)


def test_hub_ids_and_hf_paths_go_to_load_dataset(tmp_path, monkeypatch, datasets_module):
    datasets = datasets_module
    (tmp_path / "files").mkdir()
    for index in range(3):
        _color_png(tmp_path / "files" / f"{index}.png", color=(index * 60, 0, 0))
    local = datasets.load_dataset(
        "imagefolder", data_dir=str(tmp_path / "files"), split="train", cache_dir=str(tmp_path / "cache")
    )
    calls = []

    def fake_load_dataset(path, name=None, split=None, **options):
        calls.append((path, name, split, options))
        if path == "owner/missing":
            raise FileNotFoundError("Dataset 'owner/missing' doesn't exist on the Hub")
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)  # "owner/name" is no local path here
    plain = open_images("owner/name")
    assert calls[-1] == ("owner/name", None, "train", {}) and len(plain) == 3
    assert open_images("owner/name:test[:2]").describe()["split"] == "test[:2]"
    assert calls[-1][2] == "test[:2]"
    remote = open_images("hf://datasets/owner/name@v1.0/data/images:validation")
    assert calls[-1] == (
        "hf://datasets/owner/name",
        None,
        "validation",
        {"data_dir": "data/images", "revision": "v1.0"},
    )
    described = json.loads(json.dumps(remote.describe()))
    assert open_image_source(described).source_id == remote.source_id
    assert calls[-1] == calls[-2]  # reopened with the same arguments
    assert np.asarray(remote[1]).tolist() == np.asarray(local[1]["image"]).tolist()
    with pytest.raises(ImageSourceError, match="Could not load 'owner/missing'.*not a local folder"):
        open_images("owner/missing")
    with pytest.raises(ImageSourceError, match="hf://datasets/OWNER/NAME"):
        open_images("hf://datasets/owner")
    with pytest.raises(ImageSourceError, match="only hf://datasets/"):
        open_images("hf://spaces/owner/name")


def test_without_datasets_installed_the_error_says_what_to_install(tmp_path, monkeypatch, datasets_module):
    _tiny_dataset(datasets_module).save_to_disk(tmp_path / "saved")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails as if not installed
    monkeypatch.chdir(tmp_path)
    for spec in (str(tmp_path / "saved"), "owner/name", "hf://datasets/owner/name"):
        with pytest.raises(ImageSourceError, match=r"pip install vis-steer-lens\[hf\]"):
            open_images(spec)
    with pytest.raises(ImageSourceError, match=r"pip install vis-steer-lens\[hf\]"):
        open_image_source({"kind": "dataset", "loader": "disk", "path": str(tmp_path / "saved")})
