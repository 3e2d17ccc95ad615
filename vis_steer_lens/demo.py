"""The main job on the embedded toy world: explain every live feature by every method, score, compare."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vis_steer_lens.atomic import atomic_path, atomic_write_text
from vis_steer_lens.evaluate.compare import compare, format_agreement, format_margins, format_table
from vis_steer_lens.evaluate.segmentation_iou import SegmentationIoUScorer
from vis_steer_lens.evaluate.vlm_scorers import LikelihoodScorer
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.plugins import SEGMENTERS
from vis_steer_lens.runs import reference_key
from vis_steer_lens.toy import (
    ToyGenerator,
    ToyImages,
    feature_concepts,
    summarize_feature_concepts,
    toy_ground_truth,
)

#: Settings of the demo, recorded in ``DIR/demo.json``.
DEMO_SETTINGS: dict[str, Any] = {
    "mine_images": 2000,
    "mine_seed": 101,
    "reference_images": 500,
    "reference_seed": 202,
    "ground_truth_images": 2000,
    "ground_truth_seed": 303,
    "min_firing_images": 5,
    "k_images": 5,
    "rank_by": "max",
    # The run's one coefficient, chosen as `vis-steer-lens explain` chooses it (calibration/).
    "steering_coefficient": "auto",
    "hybrid_coefficient": 1.0,
    "n_images": 20,
    "max_new_tokens": 40,
    "prompt": "toy",
    "seed": 0,
    # The VLM scorers' held-out pool (the CLI's default for the toy world: seed 0 + 404, 1,000 images)
    # and images per feature; the likelihood scores the clear features (it costs a forward pass per image).
    "pool_images": 1000,
    "pool_seed": 404,
    "n_activating": 10,
    "n_random": 10,
}


def run_demo(out_dir: str | Path, progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Run the comparison on the shipped toy VLM and SAE, writing everything under ``out_dir``.

    Writes ``explanations.parquet``, ``scores.csv``, ``comparison.csv`` (generation AUROC, ground
    truth, and the ``segmentation_iou`` (toy segmenter, every feature) and ``likelihood`` (clear
    features) columns), ``comparison.html``, ``margins.csv`` (each method's paired margin over each
    control on the clear features, per scorer), ``scorer_agreement.csv`` (Spearman between scorers),
    ``feature_concepts.csv`` (ground truth), ``calibration/`` (the run's steering coefficient and its
    sweep), the mined top images
    (``mined/``), a static dashboard (``dashboard/index.html``), a Neuronpedia export
    (``neuronpedia/``) and ``demo.json``. Every stage resumes when rerun with the same folder.

    Args:
        out_dir: Output folder.
        progress: Show progress bars.
        **overrides: Replace entries of :data:`DEMO_SETTINGS`.

    Returns:
        A dict with the comparison table (DataFrame), its text rendering and timings.
    """
    from vis_steer_lens import toy

    settings = {**DEMO_SETTINGS, **overrides}
    unknown = set(overrides) - set(DEMO_SETTINGS)
    if unknown:
        raise ValueError(f"Unknown demo settings {sorted(unknown)}; known: {sorted(DEMO_SETTINGS)}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    bundle = toy.load()
    if bundle.sae is None:
        raise FileNotFoundError("This install ships no toy SAE (vis_steer_lens/toy/assets/sae).")
    vlm, sae = bundle.vlm, bundle.sae

    mined = mine_top_activations(
        vlm,
        sae,
        ToyImages(seed=settings["mine_seed"], n=settings["mine_images"]),
        k=settings["k_images"],
        rank_by=settings["rank_by"],
        batch_size=250,
        out_dir=out / "mined",
        progress=progress,
    )
    timings["mine"] = time.perf_counter() - start
    stats = mined.stats
    live = stats[stats["frac_images"] * settings["mine_images"] >= settings["min_firing_images"]]
    features = sorted(int(f) for f in live["feature"])

    concepts = feature_concepts(
        vlm,
        sae,
        n_images=settings["ground_truth_images"],
        seed=settings["ground_truth_seed"],
        progress=progress,
    )
    summary = summarize_feature_concepts(concepts)
    with atomic_path(out / "feature_concepts.csv") as tmp:
        summary.to_csv(tmp, index=False)
    timings["ground_truth"] = time.perf_counter() - start - sum(timings.values())

    reference = ToyImages(seed=settings["reference_seed"], n=settings["reference_images"])
    truth = toy_ground_truth(summary)
    pool = ToyImages(seed=settings["pool_seed"], n=settings["pool_images"])
    likelihood = LikelihoodScorer(
        vlm,
        sae,
        [pool[i] for i in range(len(pool))],
        mined=mined,
        n_activating=settings["n_activating"],
        n_random=settings["n_random"],
        seed=settings["seed"],
        pool_key=reference_key(pool.source_id, len(pool)),
    )
    scorers = (
        SegmentationIoUScorer(SEGMENTERS.get("toy")(), mined, k_images=settings["k_images"]),
        (likelihood, [int(f) for f in truth.clear_concepts().index]),
    )
    result = compare(
        vlm,
        sae,
        features,
        mined=mined,
        generator=ToyGenerator(),
        reference_images=[reference[i] for i in range(len(reference))],
        ground_truth=truth,
        prompt=settings["prompt"],
        steering_coefficient=settings["steering_coefficient"],
        hybrid_coefficient=settings["hybrid_coefficient"],
        k_images=settings["k_images"],
        max_new_tokens=settings["max_new_tokens"],
        n_images=settings["n_images"],
        seed=settings["seed"],
        out_dir=out,
        progress=progress,
        scorers=scorers,
    )
    timings["explain_and_score"] = time.perf_counter() - start - sum(timings.values())

    explanations = result.explanations.copy()
    # Top-k rows carry their image ids; steering and ground-truth rows have none (None or NaN).
    explanations["image_ids"] = explanations["image_ids"].map(
        lambda ids: json.dumps([int(i) for i in ids]) if isinstance(ids, (list, tuple)) else None
    )
    with atomic_path(out / "explanations.parquet") as tmp:
        explanations.to_parquet(tmp, index=False)
    with atomic_path(out / "scores.csv") as tmp:
        result.scores.drop(columns=["positives_mean", "positives_max"], errors="ignore").to_csv(
            tmp, index=False
        )
    with atomic_path(out / "comparison.csv") as tmp:
        result.table.to_csv(tmp, index=False)
    with atomic_path(out / "margins.csv") as tmp:
        result.margins.to_csv(tmp, index=False)
    with atomic_path(out / "comparison.html") as tmp:
        result.figure.write_html(tmp, include_plotlyjs=True)
    from vis_steer_lens.dashboard import export_dashboard, export_neuronpedia

    export_dashboard(out, out / "dashboard", sae=sae, vlm=vlm)
    export_neuronpedia(out, out / "neuronpedia")
    timings["dashboard"] = time.perf_counter() - start - sum(timings.values())
    n_clear = int(summary["clear"].sum())
    n_clear_pooled = int((summary["best_object_pooled_auroc"] >= 0.9).sum())
    text = format_table(result.table)
    margins_text = format_margins(result.margins)
    agreement_text = format_agreement(result.agreement) if result.agreement is not None else ""
    timings["total"] = time.perf_counter() - start
    record = {
        "settings": settings,
        "n_features": len(features),
        "n_live_in_ground_truth": len(summary),
        "n_clear_concept": n_clear,
        "n_clear_concept_all_scenes": n_clear_pooled,
        "timings_s": timings,
    }
    atomic_write_text(out / "demo.json", json.dumps(record, indent=2, default=str))
    return {
        "table": result.table,
        "text": text,
        "margins_text": margins_text,
        "agreement_text": agreement_text,
        "record": record,
        "comparison": result,
    }


def print_demo(result: dict[str, Any]) -> None:
    """Print the comparison table and a short summary."""
    record = result["record"]
    print(result["text"])
    print(
        "\n'ground truth' scores each feature's true concept word: its margin is that of a correct "
        "one-word answer.\n"
    )
    print(result["margins_text"])
    if result.get("agreement_text"):
        print("\n" + result["agreement_text"])
    print(
        f"\n{record['n_features']} live features explained; {record['n_clear_concept']} have a clear "
        f"non-background concept (ground-truth AUROC >= 0.9 in their background context; "
        f"{record['n_clear_concept_all_scenes']} over all scenes). Took {record['timings_s']['total']:.0f} s."
    )


__all__ = ["DEMO_SETTINGS", "print_demo", "run_demo"]
