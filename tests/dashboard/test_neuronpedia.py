"""Neuronpedia export: the batches must load with SAEDashboard's own ``NeuronpediaDashboardBatch``.

SAEDashboard pins an old transformer-lens, so it is not a dependency. The test loads only the module
defining the batch classes (``sae_dashboard/neuronpedia/neuronpedia_dashboard.py``, which imports
nothing but numpy) by file path, from an installed ``sae_dashboard`` or from an unpacked wheel
whose folder is named by ``SAE_DASHBOARD_SRC``::

    pip download --no-deps "sae-dashboard==0.8.0" -d /tmp/sd
    python -m zipfile -e /tmp/sd/sae_dashboard-0.8.0-py3-none-any.whl /tmp/sd/src
    export SAE_DASHBOARD_SRC=/tmp/sd/src
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from vis_steer_lens.dashboard import export_neuronpedia
from vis_steer_lens.dashboard.neuronpedia import ACTIVATION_KEYS, BATCH_KEYS, FEATURE_KEYS

from .conftest import D_SAE

SCHEMA_MODULE = Path("sae_dashboard") / "neuronpedia" / "neuronpedia_dashboard.py"


def _schema_file() -> Path | None:
    spec = importlib.util.find_spec("sae_dashboard")
    roots = []
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p).parent for p in spec.submodule_search_locations]
    if os.environ.get("SAE_DASHBOARD_SRC"):
        roots.append(Path(os.environ["SAE_DASHBOARD_SRC"]))
    for root in roots:
        if (root / SCHEMA_MODULE).is_file():
            return root / SCHEMA_MODULE
    return None


@pytest.fixture(scope="module")
def schema():
    path = _schema_file()
    if path is None:
        # CI sets VSL_REQUIRE_SAE_DASHBOARD so that a missing schema fails there instead of skipping.
        (pytest.fail if os.environ.get("VSL_REQUIRE_SAE_DASHBOARD") else pytest.skip)(
            "SAEDashboard source not found: install sae-dashboard, or run `pip download --no-deps "
            "sae-dashboard==0.8.0 -d DIR`, unzip the wheel into DIR/src and set SAE_DASHBOARD_SRC=DIR/src."
        )
    spec = importlib.util.spec_from_file_location("_sae_dashboard_np_schema", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(results_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("neuronpedia")
    paths = export_neuronpedia(results_dir, out, model_id="tiny-toy", features_per_batch=3)
    return out, paths


def test_batches_parse_with_saedashboard_and_round_trip(schema, exported):
    out, paths = exported
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json", "batch-2.json"]
    seen = []
    for path in paths:
        raw = json.loads(path.read_text())
        batch = schema.NeuronpediaDashboardBatch(**raw)  # unknown keys would raise TypeError
        assert batch.model_id == "tiny-toy" and batch.layer == 1 and batch.sae_id_suffix is None
        # The parser's own serialisation reproduces the file exactly: no key lost, none extra.
        assert batch.to_dict() == raw
        for feature in batch.features:
            seen.append(feature.feature_index)
            assert isinstance(feature, schema.NeuronpediaDashboardFeature)
            assert feature.n_tokens_in_prompt == 16 and feature.n_prompts_total == 24
            assert len(feature.freq_hist_data_bar_values) == len(feature.freq_hist_data_bar_heights) == 50
            for act in feature.activations:
                assert isinstance(act, schema.NeuronpediaDashboardActivation)
                assert len(act.tokens) == len(act.values) == 16 and act.tokens[5] == "p(1,1)"
                assert act.values[act.qualifying_token_index] == max(act.values)
    assert seen == list(range(D_SAE))


def test_batches_hold_only_schema_keys(exported):
    out, paths = exported
    for path in paths:
        raw = json.loads(path.read_text())
        assert tuple(raw) == BATCH_KEYS
        for feature in raw["features"]:
            assert tuple(feature) == FEATURE_KEYS
            for act in feature["activations"]:
                assert tuple(act) == ACTIVATION_KEYS


def test_vision_sidecar_and_images(results_dir, exported):
    from vis_steer_lens.mining import MinedActivations

    out, paths = exported
    mined = MinedActivations.load(Path(results_dir) / "mined")
    for path in paths:
        batch = json.loads(path.read_text())
        vision = json.loads(path.with_suffix(".vision.json").read_text())
        assert [f["feature_index"] for f in vision["features"]] == [
            f["feature_index"] for f in batch["features"]
        ]
        assert vision["grid_size"] == 4 and vision["patch_size"] == 16
        for feature, side in zip(batch["features"], vision["features"], strict=True):
            expected = [i for i, s, _ in mined.top_images(feature["feature_index"]) if s > 0]
            assert [im["image_id"] for im in side["images"]] == expected
            assert len(feature["activations"]) == len(expected)
            assert all((out / im["file"]).is_file() for im in side["images"])
            assert {e["method_label"] for e in side["explanations"]} >= {"steering", "topk", "hybrid"}


def test_explanations_records(exported):
    out, _ = exported
    records = json.loads((out / "explanations.json").read_text())
    keys = {"modelId", "layer", "index", "description", "explanationModelName", "typeName", "notes"}
    assert records and all(set(r) == keys for r in records)
    assert {r["typeName"] for r in records} == {
        "vis-steer-lens-steering",
        "vis-steer-lens-topk",
        "vis-steer-lens-hybrid",
    }  # controls (random direction) are left out by default
    assert all(r["layer"].startswith("1-") and r["index"].isdigit() for r in records)


def test_missing_mined_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="mined"):
        export_neuronpedia(tmp_path, tmp_path / "out")
