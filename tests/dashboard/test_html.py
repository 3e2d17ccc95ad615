"""The static dashboard's files: layout, completeness of the index data, and no network or inline images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vis_steer_lens.dashboard import export_dashboard
from vis_steer_lens.mining import MinedActivations

from .conftest import D_SAE, RUNS


def _script_data(path: Path, name: str):
    text = path.read_text()
    prefix = f"window.{name} = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix) :].rstrip().rstrip(";"))


@pytest.fixture(scope="module")
def dashboard(results_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dashboard")
    index = export_dashboard(results_dir, out)
    return out, index


def test_layout(dashboard):
    out, index = dashboard
    assert index == out / "index.html"
    for name in ("feature.html", "data/index.js", "data/common.js"):
        assert (out / name).is_file(), name
    assert not (out / "assets").exists()  # the pages need no library
    assert [p.name for p in (out / "data" / "features").glob("*.js")] == [
        "chunk-0.js"
    ]  # 8 features: one file
    assert sorted(int(f) for f in _script_data(out / "data/features/chunk-0.js", "VSL_FEATURES")) == list(
        range(D_SAE)
    )
    html = index.read_text()
    assert '<script src="data/index.js"></script>' in html
    assert '<script src="data/common.js"></script>' in (out / "feature.html").read_text()


def test_index_data_is_complete(results_dir, dashboard):
    out, _ = dashboard
    data = _script_data(out / "data" / "index.js", "VSL_INDEX")
    mined = MinedActivations.load(Path(results_dir) / "mined")
    stats = mined.stats.set_index("feature")
    columns = data["columns"]
    assert data["meta"]["n_features"] == len(data["rows"]) == D_SAE
    assert data["meta"]["rows_per_page"] == 100
    assert data["meta"]["methods"] == ["steering", "topk", "hybrid", "steering (random direction)"]
    assert [row[0] for row in data["rows"]] == list(range(D_SAE))
    col = {c: i for i, c in enumerate(columns)}
    for row in data["rows"]:
        assert len(row) == len(columns)
        feature = row[col["feature"]]
        assert row[col["max_act"]] == pytest.approx(stats.loc[feature, "max_act"], abs=1e-4)
        assert row[col["frac_nonzero"]] == pytest.approx(stats.loc[feature, "frac_nonzero"], rel=1e-5)
        assert row[col["explanation:topk"]].startswith("topk")
        assert row[col["auroc:hybrid"]] == pytest.approx(0.6)
        assert row[col["concept"]] == ("circle" if feature % 2 == 0 else None)  # ground truth: even ids
        assert row[col["clear"]] == (True if feature % 2 == 0 else None)
        assert row[col["live"]] == int(stats.loc[feature, "frac_images"] > 0)
        assert row[col["flag:topk"]] is None and row[col["flagged"]] == 0
        if row[col["thumb"]] is not None:
            assert (out / row[col["thumb"]]).is_file()
    assert len(RUNS) == len(data["meta"]["methods"])


def test_feature_data(results_dir, dashboard):
    out, _ = dashboard
    mined = MinedActivations.load(Path(results_dir) / "mined")
    chunk = _script_data(out / "data" / "features" / "chunk-0.js", "VSL_FEATURES")
    for feature in range(D_SAE):
        data = chunk[str(feature)]
        expected = [(i, s) for i, s, _ in mined.top_images(feature) if s > 0]
        assert [t["image_id"] for t in data["top"]] == [i for i, _ in expected]
        for t in data["top"]:
            assert (out / t["image"]).is_file() and (out / t["thumb"]).is_file()
            assert len(t["map"]) == 4 and len(t["map"][0]) == 4
        edges, counts = mined.histogram(feature)
        assert data["histogram"]["counts"] == counts.tolist()
        assert len(data["histogram"]["centres"]) == len(counts)
        assert {e["method_label"] for e in data["explanations"]} == set(data_methods(out))
        steering = next(e for e in data["explanations"] if e["method_label"] == "steering")
        assert steering["raw_generation"].startswith("The image shows")
        assert steering["coefficient"] == 4.0
    sweep = _script_data(out / "data" / "common.js", "VSL_COMMON")["sweep"]
    assert [s["chosen"] for s in sweep] == [False, True, False]


def data_methods(out: Path) -> list[str]:
    return _script_data(out / "data" / "index.js", "VSL_INDEX")["meta"]["methods"]


def test_no_cdn_and_no_inline_images(dashboard):
    out, _ = dashboard
    texts = {p: p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in (".html", ".js")}
    for path, text in texts.items():
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), path
        assert "cdn." not in text, path
        assert "data:image" not in text and ";base64," not in text, path
    for html in ("index.html", "feature.html"):
        srcs = re.findall(r"""<script[^>]*src="([^"]+)\"""", texts[out / html])
        assert srcs and all(not s.startswith(("http", "//")) and (out / s).is_file() for s in srcs)


def test_missing_mined_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="mined"):
        export_dashboard(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_dashboard(tmp_path / "nope", tmp_path / "out")


def test_images_are_shared_and_shrunk(results_dir, dashboard):
    """One page image and one thumbnail per source image, whatever the number of features showing it."""
    from PIL import Image

    from vis_steer_lens.dashboard.html import PAGE_IMAGE_SIZE, THUMB_SIZE

    out, _ = dashboard
    mined = MinedActivations.load(Path(results_dir) / "mined")
    shown = {i for f in range(D_SAE) for i, s, _ in mined.top_images(f) if s > 0}
    pages = {int(p.stem) for p in (out / "images").glob("*.*")}
    assert pages == shown
    # Toy images (64 px) are their own thumbnails; none is written twice.
    assert not list((out / "images" / "thumb").iterdir())
    uses = sum(1 for f in range(D_SAE) for _, s, _ in mined.top_images(f) if s > 0)
    assert uses > len(shown)  # some image is shown by two features, and written once
    for path in (out / "images").glob("*.*"):
        with Image.open(path) as page:
            assert max(page.size) <= max(PAGE_IMAGE_SIZE, THUMB_SIZE)
            assert page.format == "PNG"  # the toy world's few colours: lossless and small
    assert not (out / "images" / "heat").exists()  # maps are drawn in the browser, not baked in


def test_dashboard_size_and_estimate(dashboard):
    from vis_steer_lens.dashboard import dashboard_size

    out, _ = dashboard
    size = dashboard_size(out, D_SAE)
    on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size.total_bytes == on_disk
    assert 0 < size.image_bytes < size.total_bytes and size.n_images == len(
        list((out / "images").glob("*.*"))
    )
    pages = (out / "index.html").stat().st_size + (out / "feature.html").stat().st_size
    assert size.fixed_bytes == pages
    assert size.estimate(D_SAE) == pytest.approx(size.total_bytes, abs=1)
    grown = size.estimate(10 * D_SAE)
    assert grown > size.total_bytes
    assert f"{grown / 1e6:.0f} MB at all {10 * D_SAE}" in size.describe(10 * D_SAE)


def test_method_agreement():
    from vis_steer_lens.dashboard.results import content_words, method_agreement

    assert content_words("The highlighted element is a red circle.") == {"red", "circle"}
    assert content_words("Red circles") == {"red", "circle"}
    assert method_agreement(["a red circle", "red circles", "the red circle"]) == pytest.approx(1.0)
    assert method_agreement(["a red circle", "a blue square"]) == 0.0
    assert method_agreement(["red circle", "red square"]) == pytest.approx(1 / 3)
    assert method_agreement(["red circle", None, ""]) is None  # one explanation: nothing to agree with


def test_nearest_features_by_decoder_cosine():
    import torch

    from vis_steer_lens.dashboard.html import nearest_features

    decoder = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    near = nearest_features(decoder, [0, 2], n=2)
    assert [f for f, _ in near[0]] == [1, 2]
    assert near[0][0][1] == pytest.approx(0.9 / (0.81 + 0.01) ** 0.5, abs=1e-4)
    assert near[2][0][0] == 1 and near[3 - 1][1][1] == pytest.approx(0.0, abs=1e-6)


def test_large_images_are_shrunk_with_thumbnails(tmp_path):
    import numpy as np
    from PIL import Image

    from vis_steer_lens.dashboard.html import PAGE_IMAGE_SIZE, THUMB_SIZE, _save_web_image

    pixels = np.random.default_rng(0).integers(0, 256, (320, 640, 3), dtype=np.uint8)
    noise = Image.fromarray(pixels)  # many colours: a photo-like JPEG
    page = _save_web_image(noise, tmp_path / "page", PAGE_IMAGE_SIZE)
    thumb = _save_web_image(noise, tmp_path / "thumb", THUMB_SIZE)
    assert page.suffix == thumb.suffix == ".jpg"
    with Image.open(page) as a, Image.open(thumb) as b:
        assert a.size == (PAGE_IMAGE_SIZE, PAGE_IMAGE_SIZE // 2) and b.size == (THUMB_SIZE, THUMB_SIZE // 2)
    flat = Image.new("RGB", (32, 48), (200, 10, 10))
    small = _save_web_image(flat, tmp_path / "flat", PAGE_IMAGE_SIZE)
    with Image.open(small) as c:
        assert small.suffix == ".png" and c.size == (32, 48)  # never enlarged
        assert c.convert("RGB").getpixel((5, 5)) == (200, 10, 10)  # colours kept exactly


def test_the_run_s_sweeps_get_a_page_linked_from_the_index(results_dir, tmp_path):
    import shutil

    import pandas as pd

    from vis_steer_lens import RunFolder
    from vis_steer_lens.evaluate.ablations import write_sweep

    run_dir = tmp_path / "run"
    shutil.copytree(results_dir, run_dir)
    # Without sweeps: no page and no link.
    bare = export_dashboard(run_dir, tmp_path / "bare")
    assert not (tmp_path / "bare" / "sweeps.html").exists() and "sweeps.html" not in bare.read_text()
    run = RunFolder(run_dir)
    base = pd.DataFrame(
        {
            "axis": "base-image",
            "value": ["white", "noise", "zero-at-hook"],
            "n_features": [8, 8, 8],
            "accuracy": [0.625, 0.25, 0.5],
            "accuracy_lo": [0.3, 0.0, 0.2],
            "accuracy_hi": [0.9, 0.5, 0.8],
            "examples": ["red <circle> | blue", "square", "dotted"],
        }
    )
    write_sweep(run, "base-image", base)
    write_sweep(run, "layer", base.assign(axis="layer", value=["blocks.0", "blocks.1", "blocks.2"]))
    out = tmp_path / "dashboard"
    index = export_dashboard(run_dir, out)
    assert '<a href="sweeps.html">' in index.read_text()
    page = (out / "sweeps.html").read_text()
    # One section per axis, in the axes' order, each a table of its points and a link to its figure.
    assert page.index('id="sweep-base-image"') < page.index('id="sweep-layer"')
    assert page.count("<tr>") == 2 + 2 * 3
    assert "<td>zero-at-hook</td>" in page and '<td class="num">0.625</td>' in page
    assert "red &lt;circle&gt; | blue" in page  # answers are escaped
    for href in re.findall(r'href="([^"]+\.html)"', page):
        if href != "index.html":
            assert (out / href).resolve().is_file(), href
    assert len(re.findall(r'href="[^"]*sweeps/(base-image|layer)\.html"', page)) == 2
