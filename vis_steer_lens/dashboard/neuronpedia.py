"""Export mined features as Neuronpedia dashboard batches (the SAEDashboard ``batch-N.json`` format).

Neuronpedia imports an SAE's dashboards from ``batch-N.json`` files written by SAEDashboard's
``NeuronpediaRunner``. Each file is a ``NeuronpediaDashboardBatch``
(``sae_dashboard/neuronpedia/neuronpedia_dashboard.py``, sae-dashboard 0.8.0): ``model_id, layer,
sae_set, sae_id_suffix, features``; each feature is a ``NeuronpediaDashboardFeature`` and each top
example a ``NeuronpediaDashboardActivation``. Those classes take their fields as keyword arguments,
so a file with any other key fails to load: vision-only data therefore goes to a sidecar
``batch-N.vision.json`` beside each batch.

A vision SAE maps onto the text schema as follows: one *prompt* is one image, its *tokens* are the
image's patches (``p(row,col)``, row-major), and each top image is one activation record whose
``values`` are the feature's per-patch activations. Logit fields (text-only) are empty lists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vis_steer_lens.atomic import atomic_path, atomic_write_text
from vis_steer_lens.dashboard.results import DashboardResults, patch_labels
from vis_steer_lens.hook_names import split_hook_name

#: Keys of a ``NeuronpediaDashboardBatch`` (SAEDashboard 0.8.0 ``to_dict``).
BATCH_KEYS = ("model_id", "layer", "sae_set", "sae_id_suffix", "features")
#: Keys of a ``NeuronpediaDashboardFeature`` (SAEDashboard 0.8.0 ``to_dict``).
FEATURE_KEYS = (
    "feature_index",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_l1",
    "correlated_neurons_pearson",
    "correlated_features_indices",
    "correlated_features_l1",
    "correlated_features_pearson",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_values",
    "freq_hist_data_bar_heights",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "n_prompts_total",
    "n_tokens_in_prompt",
    "dataset",
    "decoder_weights_dist",
    "activations",
    "vector",
)
#: Keys of a ``NeuronpediaDashboardActivation`` written here (the optional ``dfa_*`` keys are omitted).
ACTIVATION_KEYS = ("bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index")

#: SAEDashboard marks the top-activations group with these bin bounds (``_parse_sequence_group_title``).
TOP_BIN_MIN, TOP_BIN_CONTAINS = -1, -1
#: Explanation type recorded on Neuronpedia, one per method.
EXPLANATION_TYPE_PREFIX = "vis-steer-lens"


def _slug(text: str) -> str:
    """A Neuronpedia id: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "sae"


def _layer_of(hook_name: str) -> int:
    layer, _ = split_hook_name(hook_name)
    if layer is None:
        raise ValueError(f"Cannot read a layer number from hook {hook_name!r}; pass layer= explicitly.")
    return layer


def _round(values: Any, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in values]


def neuronpedia_source_id(layer: int, sae_set: str, sae_id_suffix: str | None = None) -> str:
    """Neuronpedia's id of an SAE ("source"): ``{layer}-{sae_set}`` plus ``__{suffix}`` when given."""
    source = f"{layer}-{sae_set}"
    return f"{source}__{sae_id_suffix}" if sae_id_suffix else source


def _feature_record(results: DashboardResults, feature: int, stats_row: dict[str, Any]) -> dict[str, Any]:
    mined = results.mined
    edges, counts = mined.histogram(feature)
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    max_act = float(stats_row["max_act"])
    activations = []
    for _image_id, _score, amap in results.top_images(feature):
        flat = amap.flatten()
        activations.append(
            {
                "bin_min": TOP_BIN_MIN,
                "bin_max": round(max_act, 3),
                "bin_contains": TOP_BIN_CONTAINS,
                # One token per patch of this image's own grid (native-resolution images differ).
                "tokens": patch_labels(*amap.shape),
                "values": _round(flat.tolist()),
                "qualifying_token_index": int(flat.argmax()),
            }
        )
    record = {
        "feature_index": int(feature),
        # Text-model tables (neuron alignment, correlations, logits) have no vision counterpart here.
        "neuron_alignment_indices": [],
        "neuron_alignment_values": [],
        "neuron_alignment_l1": [],
        "correlated_neurons_indices": [],
        "correlated_neurons_l1": [],
        "correlated_neurons_pearson": [],
        "correlated_features_indices": [],
        "correlated_features_l1": [],
        "correlated_features_pearson": [],
        "neg_str": [],
        "neg_values": [],
        "pos_str": [],
        "pos_values": [],
        "frac_nonzero": float(stats_row["frac_nonzero"]),
        "freq_hist_data_bar_values": _round(centres),
        "freq_hist_data_bar_heights": [float(c) for c in counts.tolist()],
        "logits_hist_data_bar_heights": [],
        "logits_hist_data_bar_values": [],
        "n_prompts_total": int(mined.images_mined),  # unreadable images were never prompts
        "n_tokens_in_prompt": int(mined.n_patches),
        "dataset": mined.source_id,
        "decoder_weights_dist": [],
        "activations": activations,
        "vector": [],
    }
    assert tuple(record) == FEATURE_KEYS  # the schema is exact: keep it in step with FEATURE_KEYS
    return record


def _vision_record(
    results: DashboardResults,
    feature: int,
    images_dir: Path,
    explanations: list[dict[str, Any]],
    written: set[int],
) -> dict[str, Any]:
    images = []
    for image_id, score, _amap in results.top_images(feature):
        name = f"img-{image_id}.png"
        if image_id not in written:
            with atomic_path(images_dir / name, sync=False) as tmp:
                results.image(image_id).save(tmp, format="PNG")
            written.add(image_id)
        images.append({"image_id": int(image_id), "score": round(float(score), 4), "file": f"images/{name}"})
    return {
        "feature_index": int(feature),
        "images": images,
        "explanations": [
            {
                k: e.get(k)
                for k in ("method_label", "method", "direction", "explanation", "auroc_mean", "auroc_max")
            }
            for e in explanations
        ],
    }


def export_neuronpedia(
    results_dir: str | Path,
    out_dir: str | Path,
    *,
    model_id: str | None = None,
    layer: int | None = None,
    sae_set: str | None = None,
    sae_id_suffix: str | None = None,
    features_per_batch: int = 128,
    explanation_model_name: str | None = None,
    include_controls: bool = False,
) -> list[Path]:
    """Write a results folder as Neuronpedia feature batches.

    Writes into ``out_dir``: ``batch-N.json`` (the exact SAEDashboard schema), ``batch-N.vision.json``
    (per feature: top image ids, scores and PNG file names, explanations per method),
    ``images/img-ID.png`` (each top image once) and ``explanations.json`` (Neuronpedia explanation
    records, fields of its ``Explanation`` table: ``modelId, layer, index, description,
    explanationModelName, typeName, notes``).

    Args:
        results_dir: A results folder with ``mined/`` (and optionally ``explanations.parquet``,
            ``scores.csv``).
        out_dir: Output folder (created).
        model_id: Neuronpedia model id (default: the mined model's name, slugified).
        layer: Layer number (default: read from the SAE's hook name, e.g. ``blocks.3.…`` → 3).
        sae_set: Neuronpedia SAE set name (default: the SAE id, slugified).
        sae_id_suffix: Optional suffix of the Neuronpedia SAE id.
        features_per_batch: Features per ``batch-N.json``.
        explanation_model_name: ``explanationModelName`` of the explanation records (default: each
            explanation's ``model_name``, the VLM that wrote it).
        include_controls: Also put control runs (random or permuted directions) in
            ``explanations.json``; off by default, since they do not describe the feature.

    Returns:
        The ``batch-N.json`` paths, in order.

    Raises:
        FileNotFoundError: ``results_dir`` has no ``mined/`` results.
        ValueError: Bad ``features_per_batch``, or no layer can be inferred.
    """
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch must be >= 1, got {features_per_batch}.")
    results = DashboardResults.load(results_dir)
    mined = results.mined
    if mined is None:
        raise FileNotFoundError(
            f"The Neuronpedia export shows each feature's top images, and {str(results_dir)!r} has none mined; "
            f"run `vis-steer-lens mine --run {results_dir}` first (the HTML dashboard works without them)."
        )
    model_id = model_id or _slug(mined.meta.get("model_name") or "model")
    layer = _layer_of(mined.hook_name) if layer is None else int(layer)
    sae_set = sae_set or _slug(mined.sae_id)
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    stats = {int(row["feature"]): row for row in mined.stats.to_dict("records")}
    explanations = results.explanation_records()
    features = results.features
    written: set[int] = set()
    paths = []
    for batch_index, start in enumerate(range(0, len(features), features_per_batch)):
        chunk = features[start : start + features_per_batch]
        batch = {
            "model_id": model_id,
            "layer": layer,
            "sae_set": sae_set,
            "sae_id_suffix": sae_id_suffix,
            "features": [_feature_record(results, f, stats[f]) for f in chunk],
        }
        vision = {
            "format": "vis_steer_lens.neuronpedia-vision/1",
            "batch": f"batch-{batch_index}.json",
            "sae_id": mined.sae_id,
            "hook_name": mined.hook_name,
            "grid_size": mined.grid_size,
            "patch_size": mined.patch_size,
            "image_source": mined.meta.get("image_source"),
            "token_labels": "p(row,col), row-major over the patch grid",
            "features": [
                _vision_record(results, f, images_dir, explanations.get(f, []), written) for f in chunk
            ],
        }
        path = out / f"batch-{batch_index}.json"
        atomic_write_text(path, json.dumps(batch, allow_nan=False))
        atomic_write_text(out / f"batch-{batch_index}.vision.json", json.dumps(vision, allow_nan=False))
        paths.append(path)

    source_id = neuronpedia_source_id(layer, sae_set, sae_id_suffix)
    records = []
    for feature in features:
        for e in explanations.get(feature, []):
            if not e.get("explanation"):
                continue
            if not include_controls and e.get("direction") not in (None, "sae"):
                continue
            notes = {k: e.get(k) for k in ("method", "direction", "auroc_mean", "auroc_max", "prompt_id")}
            records.append(
                {
                    "modelId": model_id,
                    "layer": source_id,
                    "index": str(feature),
                    "description": str(e["explanation"]),
                    "explanationModelName": explanation_model_name or e.get("model_name") or "unknown",
                    "typeName": f"{EXPLANATION_TYPE_PREFIX}-{_slug(e['method_label'])}",
                    "notes": json.dumps(notes),
                }
            )
    atomic_write_text(out / "explanations.json", json.dumps(records, indent=1, allow_nan=False))
    return paths


__all__ = [
    "ACTIVATION_KEYS",
    "BATCH_KEYS",
    "FEATURE_KEYS",
    "export_neuronpedia",
    "neuronpedia_source_id",
]
