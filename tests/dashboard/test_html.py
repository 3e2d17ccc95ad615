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
    for name in ("feature.html", "assets/plotly.min.js", "data/index.js", "data/common.js"):
        assert (out / name).is_file(), name
    assert sorted(int(p.stem) for p in (out / "data" / "features").glob("*.js")) == list(range(D_SAE))
    assert (out / "assets" / "plotly.min.js").stat().st_size > 1_000_000  # the real bundle, not a stub
    html = index.read_text()
    assert '<script src="data/index.js"></script>' in html
    assert '<script src="assets/plotly.min.js"></script>' in (out / "feature.html").read_text()


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
        if row[col["thumb"]] is not None:
            assert (out / row[col["thumb"]]).is_file()
    assert len(RUNS) == len(data["meta"]["methods"])


def test_feature_data(results_dir, dashboard):
    out, _ = dashboard
    mined = MinedActivations.load(Path(results_dir) / "mined")
    for feature in range(D_SAE):
        data = _script_data(out / "data" / "features" / f"{feature}.js", "VSL_FEATURE")
        expected = [(i, s) for i, s, _ in mined.top_images(feature) if s > 0]
        assert [t["image_id"] for t in data["top"]] == [i for i, _ in expected]
        for t in data["top"]:
            assert (out / t["heatmap"]).is_file() and (out / t["image"]).is_file()
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
        if path.name == "plotly.min.js":
            continue  # the library mentions URLs in strings (docs, optional MathJax/topojson), loads none here
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
