"""One table comparing explanation methods, in the form of the paper's: method x metric, with intervals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.stats import rankdata

from vis_steer_lens.atomic import atomic_path
from vis_steer_lens.evaluate.generation_auroc import GenerationAUROCScorer, summarize_scores
from vis_steer_lens.evaluate.ground_truth import GROUND_TRUTH_METHOD, GroundTruth, ground_truth_accuracy
from vis_steer_lens.evaluate.metrics import bootstrap_mean_ci, method_label
from vis_steer_lens.explain import make_explainer
from vis_steer_lens.explain.calibration import calibrate_run
from vis_steer_lens.explain.sweep import DEFAULT_MULTIPLES, DEFAULT_SAMPLE_SIZE, sample_features
from vis_steer_lens.jsonl import write_jsonl
from vis_steer_lens.runs import RunFolder, RunFolderError, run_name, with_method_labels
from vis_steer_lens.saes.metadata import sae_identity

#: Per-explanation scorers whose files ``compare`` reads beside the generation AUROC: the scorer's
#: name (its files' ``RUN/scores/<name>.<scorer>.jsonl``) -> the column of its score in those rows.
#: The comparison's columns are named after the scorer.
SCORER_COLUMNS: dict[str, str] = {
    "clip": "clip_similarity",
    "segmentation_iou": "segmentation_iou",
    "segmentation_iou_union": "segmentation_iou_union",
    "detection": "detection",
    "likelihood": "likelihood",
}

#: The runs of a comparison: (method, direction). Controls are the steering directions that are not the SAE's.
DEFAULT_RUNS: tuple[tuple[str, str], ...] = (
    ("steering", "sae"),
    ("topk", "sae"),
    ("hybrid", "sae"),
    ("steering", "random_norm_matched"),
    ("steering", "permuted"),
)


@dataclass
class Comparison:
    """Everything a comparison produced.

    Attributes:
        explanations: One row per (run, feature), all explainers' columns.
        scores: One row per explanation: AUROC from generation (mean and max pooling).
        table: One row per method label: AUROCs with bootstrap intervals, the paper's global
            AUROC, and (with ground truth) accuracy on features with a clear concept.
        figure: The table as a plotly figure.
        calibration: The steering coefficient sweep, when the coefficient was ``"auto"``.
        margins: With ground truth: each method's paired margin over each control on the clear
            features (:func:`control_margins`).
        agreement: Spearman rank correlation between every two scorers over explanations
            (:func:`scorer_agreement`).
        extra: Other scorers' rows by scorer name (segmentation IoU, likelihood, ...).
    """

    explanations: pd.DataFrame
    scores: pd.DataFrame
    table: pd.DataFrame
    figure: go.Figure
    calibration: pd.DataFrame | None = None
    margins: pd.DataFrame | None = None
    agreement: pd.DataFrame | None = None
    extra: dict[str, pd.DataFrame] | None = None


def _explainer(method: str, direction: str, vlm, sae, mined, settings: dict[str, Any]):
    steering = method == "steering"
    return make_explainer(
        method,
        vlm,
        sae,
        mined=mined,
        coefficient=settings["steering_coefficient" if steering else "hybrid_coefficient"],
        empty_image=settings["empty_image"],
        k_images=settings["k_images"],
        display=settings["display"],
        batch_size=settings["batch_size" if steering else "topk_batch_size"],
        direction=direction,
        **(settings["steering_sweep"] if steering and settings["steering_sweep"] else {}),
        prompt=settings["prompt"],
        max_new_tokens=settings["max_new_tokens"],
        seed=settings["seed"],
    )


def compare(
    vlm: Any,
    sae: Any,
    features: list[int],
    *,
    mined: Any,
    generator: Any,
    reference_images: list[Any],
    ground_truth: GroundTruth | None = None,
    ground_truth_row: bool = True,
    runs: tuple[tuple[str, str], ...] = DEFAULT_RUNS,
    prompt: str = "default",
    steering_coefficient: float | str = "auto",
    steering_sweep: dict[str, Any] | None = None,
    hybrid_coefficient: float = 1.0,
    empty_image: str = "white",
    k_images: int = 5,
    display: str = "mask",
    max_new_tokens: int = 48,
    batch_size: int = 32,
    topk_batch_size: int = 8,
    n_images: int = 3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
    scorers: tuple[Any, ...] = (),
) -> Comparison:
    """Explain the same features by every method and control, score them, and tabulate.

    Args:
        vlm: The subject (and explainer) HookedVLM.
        sae: The SAE whose features are explained.
        features: Feature ids (usually the live ones).
        mined: Mined top activations (for Top-k and the hybrid).
        generator: Text-to-image generator for the AUROC (the toy renderer, or diffusers).
        reference_images: Negatives for the AUROC (random dataset images).
        ground_truth: A world's :class:`~vis_steer_lens.evaluate.GroundTruth` (the toy world's:
            ``vis_steer_lens.toy.toy_ground_truth``); adds an accuracy column, the AUROC (max
            pooling) on the features with a clear concept, and the margins over the controls.
        ground_truth_row: With ``ground_truth``, also score each feature's concept word as an
            explanation (the ``"ground truth"`` row, :meth:`GroundTruth.explanations`):
            what a correct one-concept explanation reaches under this scorer, the ceiling that
            the methods' AUROCs are read against.
        runs: ``(method, direction)`` pairs to run.
        prompt: Prompt preset for all explainers.
        steering_coefficient: Steering coefficient (number or ``"auto"``; the sweep runs once
            and its choice is used by every steering run, controls included; with ``out_dir``
            it is the run's one coefficient, :func:`~vis_steer_lens.explain.calibration.calibrate_run`).
        steering_sweep: ``sweep_multiples`` / ``sweep_features`` of the ``"auto"`` coefficient's
            sweep (default: :mod:`~vis_steer_lens.explain.sweep`'s).
        hybrid_coefficient: Hybrid coefficient, a multiple of each image's patch norm.
        empty_image: Empty image of the steering runs.
        k_images: Top images per Top-k prompt.
        display: ``"mask"`` or ``"heatmap"``.
        max_new_tokens: Generation cap for every explainer.
        batch_size: Features per ``generate`` for steering.
        topk_batch_size: Features per ``generate`` for Top-k and the hybrid.
        n_images: Generated images per explanation.
        seed: Seeds the explainers and the image generation.
        out_dir: A run folder (:class:`~vis_steer_lens.RunFolder`) where each method's
            explanations and scores are written as they finish; a rerun resumes.
        progress: Show progress bars.
        scorers: More per-explanation scorers (:class:`~vis_steer_lens.SegmentationIoUScorer`,
            :class:`~vis_steer_lens.LikelihoodScorer`, :class:`~vis_steer_lens.DetectionScorer`),
            each scoring every method's explanations into ``RUN/scores/<name>.<scorer>.jsonl``;
            their columns join the table and the margins. A ``(scorer, features)`` pair scores
            only those features (a slow scorer on the clear ones).
    """
    run = RunFolder(out_dir) if out_dir is not None else None
    if run is not None:
        run.claim(sae, vlm)  # a run folder holds one SAE and one model
    settings = dict(
        prompt=prompt,
        steering_coefficient=steering_coefficient,
        steering_sweep=dict(steering_sweep or {}),
        hybrid_coefficient=hybrid_coefficient,
        empty_image=empty_image,
        k_images=k_images,
        display=display,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        topk_batch_size=topk_batch_size,
        seed=seed,
    )
    calibration = None
    sweep_explainer = None
    if settings["steering_coefficient"] == "auto" and any(m == "steering" for m, _ in runs):
        # One coefficient for every steering run, the controls included.
        sweep = {
            "multiples": tuple(settings["steering_sweep"].get("sweep_multiples", DEFAULT_MULTIPLES)),
            "sample_size": settings["steering_sweep"].get("sweep_features", DEFAULT_SAMPLE_SIZE),
        }
        if run is not None:  # the run's one coefficient, sampled from its live features
            choice, sweep_explainer = calibrate_run(
                run,
                vlm,
                sae,
                "auto",
                prompt=prompt,
                empty_image=empty_image,
                live=None if mined is None else mined.live_features(),
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                seed=seed,
                progress=progress,
                log=None,
                **sweep,
            )
            calibration = run.sweep()
            settings["steering_coefficient"] = choice.coefficient
        else:
            sweep_explainer = _explainer("steering", "sae", vlm, sae, mined, settings)
            calibration = sweep_explainer.calibrate(
                sample_features(features, sweep["sample_size"], seed), progress=progress
            )
            settings["steering_coefficient"] = sweep_explainer.chosen_coefficient
        if sweep_explainer is not None:
            sweep_explainer.coefficient = settings["steering_coefficient"]
    frames = []
    for method, direction in runs:
        if (method, direction) == ("steering", "sae") and sweep_explainer is not None:
            explainer = sweep_explainer  # its sweep rows at the choice are reused
        else:
            explainer = _explainer(method, direction, vlm, sae, mined, settings)
        name = run_name(method, direction)
        path = None if run is None else run.explanations_path(name)
        frames.append(explainer.explain(features, out=path, progress=progress))
    if run is not None and ground_truth is not None:
        run.save_ground_truth(ground_truth)
    if ground_truth is not None and ground_truth_row:
        truth = ground_truth.explanations(features).assign(sae_id=sae_identity(sae))
        if run is not None:
            write_jsonl(run.explanations_path(run_name(GROUND_TRUTH_METHOD)), truth.to_dict("records"))
        frames.append(truth)
    explanations = with_method_labels(pd.concat(frames, ignore_index=True))

    scorer = GenerationAUROCScorer(
        vlm,
        sae,
        generator,
        reference_images,
        n_images=n_images,
        seed=seed,
        evidence_dir=None if run is None else run.evidence_dir,  # for the dashboard's feature pages
    )
    scored = []
    for (method, direction), group in explanations.groupby(["method", "direction"], sort=False):
        path = None if run is None else run.scores_path(run_name(method, direction))
        desc = f"scoring {method_label(method, direction)}"
        scored.append(scorer.score(group, progress=progress, out_path=path, desc=desc))
    scores = pd.concat(scored, ignore_index=True)
    reference = scorer.reference_activations()
    if run is not None:
        run.save_reference(*reference)
    extra = {}
    for other in scorers:
        other, only = other if isinstance(other, tuple) else (other, None)
        frames = []
        rows = explanations if only is None else explanations[explanations["feature"].astype(int).isin(only)]
        for (method, direction), group in rows.groupby(["method", "direction"], sort=False):
            path = None if run is None else run.scores_path(run_name(method, direction), other.name)
            desc = f"{other.name} {method_label(method, direction)}"
            frames.append(other.score(group, progress=progress, out_path=path, desc=desc))
        extra[other.name] = pd.concat(frames, ignore_index=True)
    table, margins = tabulate(
        scores, reference, explanations, ground_truth, seed=seed, runs=runs, extra=extra
    )
    agreement = scorer_agreement(merged_scores(scores, extra), ground_truth, seed=seed)
    if run is not None and len(agreement):
        with atomic_path(run.agreement_path) as tmp:
            agreement.to_csv(tmp, index=False)
    return Comparison(
        explanations,
        scores,
        table,
        comparison_figure(table),
        calibration,
        margins,
        agreement=agreement,
        extra=extra,
    )


def tabulate(
    scores: pd.DataFrame | None,
    reference: tuple[Any, Any] | dict | None,
    explanations: pd.DataFrame | None = None,
    ground_truth: GroundTruth | None = None,
    *,
    seed: int = 0,
    runs: tuple[tuple[str, str], ...] = DEFAULT_RUNS,
    extra: dict[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The comparison table (and, with ground truth, the margins over the controls) from scores.

    Args:
        scores: Per-explanation scores (:meth:`GenerationAUROCScorer.score`, or
            :func:`scores_from_rows` over a run folder's rows); ``None`` when only other scorers ran.
        reference: The scorer's ``(mean, max)`` reference activations ``[n_ref, d_sae]``.
        explanations: The explanations (for the ground-truth accuracy); the scores' own
            explanation texts when ``None``.
        ground_truth: The world's ground truth, or ``None``.
        seed: The scorer's seed.
        runs: The preferred row order; other labels follow, the ground-truth row last.
        extra: Other scorers' rows by scorer name (:data:`SCORER_COLUMNS`): each adds the columns
            ``<scorer>``, ``<scorer>_lo``, ``<scorer>_hi`` (mean over features with a bootstrap
            interval), with ground truth ``clear_<scorer>`` (and its interval) over the clear
            features, and its paired margins.

    Returns:
        ``(table, margins)``: the margins are :func:`paired_margins` (on the clear features with
        ground truth, else on every feature the two compared labels share).
    """
    extra = {name: frame for name, frame in (extra or {}).items() if frame is not None and len(frame)}
    if scores is not None and len(scores):
        table = summarize_scores(
            scores, *(reference if isinstance(reference, tuple) else (reference, None)), seed=seed
        )
    else:
        labels = [label for frame in extra.values() for label in frame["method_label"]]
        table = pd.DataFrame({"method_label": list(dict.fromkeys(labels))})
    merged = merged_scores(scores, extra)
    if ground_truth is not None:
        texts = explanations if explanations is not None else merged
        accuracy = ground_truth_accuracy(texts, ground_truth, seed=seed)
        table = table.merge(accuracy, on="method_label", how="left")
        if scores is not None and len(scores):
            table = table.merge(
                clear_feature_auroc(scores, ground_truth, seed=seed), on="method_label", how="left"
            )
    clear = set(ground_truth.clear_concepts().index) if ground_truth is not None else None
    for name in extra:
        table = table.merge(_scorer_columns(merged, name, clear, seed), on="method_label", how="left")
    margins = paired_margins(merged, ground_truth, seed=seed, scorers=list(extra))
    order = {method_label(m, d): i for i, (m, d) in enumerate(runs)}
    order[GROUND_TRUTH_METHOD] = len(runs) + 1000
    rank = table["method_label"].map(lambda label: order.get(label, len(runs)))
    table = table.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")
    return table.reset_index(drop=True), margins


def merged_scores(scores: pd.DataFrame | None, extra: dict[str, pd.DataFrame] | None) -> pd.DataFrame:
    """One row per (method label, feature) with every scorer's score side by side.

    Args:
        scores: Generation-AUROC rows (with ``auroc_max``), or ``None``.
        extra: Other scorers' rows by scorer name; each row has ``method_label``, ``feature``
            and the scorer's column (:data:`SCORER_COLUMNS`), which becomes a column named
            after the scorer.

    Returns:
        ``method_label, feature, explanation, direction, is_control`` and ``auroc_max`` (where
        generation AUROC ran) and one column per scorer.
    """
    keys = ["method_label", "feature"]
    info = ["explanation", "method", "direction", "is_control"]
    frames = []
    if scores is not None and len(scores):
        part = scores.assign(feature=scores["feature"].astype(int))
        frames.append(part[[c for c in (*keys, *info, "auroc_max") if c in part]])
    for name, frame in (extra or {}).items():
        column = SCORER_COLUMNS.get(name, name)
        part = frame.assign(feature=frame["feature"].astype(int)).rename(columns={column: name})
        frames.append(part[[c for c in (*keys, *info, name) if c in part]])
    if not frames:
        return pd.DataFrame(columns=[*keys, *info])
    merged = frames[0].drop_duplicates(keys, keep="last")
    for frame in frames[1:]:
        frame = frame.drop_duplicates(keys, keep="last")
        merged = merged.merge(frame, on=keys, how="outer", suffixes=("", "_other"))
        for column in info:
            other = f"{column}_other"
            if other in merged:
                merged[column] = (
                    merged[column].where(merged[column].notna(), merged[other])
                    if column in merged
                    else merged[other]
                )
                merged = merged.drop(columns=other)
    # An outer merge sorts the keys; keep the labels in the order the scorers listed them.
    order = {label: i for i, label in enumerate(dict.fromkeys(x for f in frames for x in f["method_label"]))}
    merged = merged.assign(_order=merged["method_label"].map(order))
    merged = merged.sort_values(["_order", "feature"], kind="stable").drop(columns="_order")
    if "is_control" not in merged:
        merged["is_control"] = merged["direction"] != "sae"
    merged["is_control"] = merged["is_control"].astype(bool)
    return merged.reset_index(drop=True)


def _scorer_columns(merged: pd.DataFrame, name: str, clear: set[int] | None, seed: int) -> pd.DataFrame:
    """Per method label: the scorer's mean with a bootstrap interval (and over the clear features)."""
    rows = []
    for label, group in merged.groupby("method_label", sort=False):
        mean, lo, hi = bootstrap_mean_ci(group[name].to_numpy(float), seed=seed)
        row = {"method_label": label, name: mean, f"{name}_lo": lo, f"{name}_hi": hi}
        if clear is not None:
            values = group.loc[group["feature"].isin(clear), name].to_numpy(float)
            mean, lo, hi = bootstrap_mean_ci(values, seed=seed)
            row.update({f"clear_{name}": mean, f"clear_{name}_lo": lo, f"clear_{name}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def compare_run(
    run: RunFolder | str | Path, *, write: bool = True, exclude_flagged: bool = False
) -> Comparison:
    """The comparison table of whatever a run folder holds: the demo's table, for any run.

    Reads every method's explanations and scores (``evaluate`` must have scored at least one
    method; the negatives it saved make the table without a model), the ground truth where the
    run has it (``evaluate --scorer ground_truth``, or the demo), and writes ``comparison.csv``,
    ``margins.csv`` (:func:`paired_margins`: each method over each control and each other
    method) and ``comparison.html``.

    Args:
        run: The run folder.
        write: Write the files.
        exclude_flagged: Leave out answers flagged as repetitions, unfinished or empty (the
            ``flag`` column of the explanations); features that never fired are never scored.

    Raises:
        RunFolderError: If the run holds no scores.
    """
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    rows = run.scores()
    scored = run.scored()  # each method's scores against the reference set it was scored with
    others = [name for name in SCORER_COLUMNS if run.score_names(name)]
    if (rows is None or scored is None) and not others:
        raise RunFolderError(
            f"{str(run.root)!r} holds no scores yet (it has {run.contents()}); score a method first, e.g. "
            f"`vis-steer-lens evaluate --run {run.root} --method steering`."
        )
    seed = int(rows["seed"].iloc[0]) if rows is not None and "seed" in rows and len(rows) else 0
    scores, reference = None, None
    if scored is not None:
        scores, references = scored
        reference = references[None] if list(references) == [None] else references
    explanations = run.explanations()
    if explanations is not None and "flag" in explanations and scores is not None:
        scores = _with_flags(scores, explanations)
        if exclude_flagged:
            scores = scores[~scores["flag"].isin(FLAGGED)].reset_index(drop=True)
            explanations = explanations[~explanations["flag"].isin(FLAGGED)]
    extra = {name: run.scores(name) for name in SCORER_COLUMNS}
    extra = {name: frame for name, frame in extra.items() if frame is not None and len(frame)}
    if explanations is not None and "flag" in explanations:
        extra = {name: _with_flags(frame, explanations) for name, frame in extra.items()}
        if exclude_flagged:
            extra = {name: f[~f["flag"].isin(FLAGGED)].reset_index(drop=True) for name, f in extra.items()}
    ground_truth = run.ground_truth()
    table, margins = tabulate(scores, reference, explanations, ground_truth, seed=seed, extra=extra)
    agreement = scorer_agreement(merged_scores(scores, extra), ground_truth, seed=seed)
    figure = comparison_figure(table)
    if write:
        with atomic_path(run.comparison_path) as tmp:
            table.to_csv(tmp, index=False)
        with atomic_path(run.comparison_figure_path) as tmp:
            figure.write_html(tmp, include_plotlyjs=True)
        with atomic_path(run.margins_path) as tmp:
            margins.to_csv(tmp, index=False)
        if len(agreement):
            with atomic_path(run.agreement_path) as tmp:
                agreement.to_csv(tmp, index=False)
    return Comparison(
        explanations if explanations is not None else scores,
        scores,
        table,
        figure,
        run.sweep(),
        margins,
        agreement=agreement,
        extra=extra,
    )


#: Flags of answers that ``exclude_flagged`` leaves out (a dead feature's row is never scored).
FLAGGED = ("repetition", "unfinished", "empty")


def _with_flags(scores: pd.DataFrame, explanations: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with each row's ``flag`` from its explanation row (by method label and feature)."""
    flags = explanations[["method_label", "feature", "flag"]].copy()
    flags["feature"] = flags["feature"].astype(int)
    flags = flags.drop_duplicates(["method_label", "feature"], keep="last")
    merged = scores.drop(columns=["flag"], errors="ignore").assign(feature=scores["feature"].astype(int))
    return merged.merge(flags, on=["method_label", "feature"], how="left")


def paired_margins(
    scores: pd.DataFrame,
    ground_truth: GroundTruth | None = None,
    seed: int = 0,
    scorers: list[str] | tuple[str, ...] = (),
) -> pd.DataFrame:
    """How far each method is above each control and each other method, feature by feature.

    Two labels explain the same features, so the fair comparison is paired: per shared feature,
    one label's AUROC (max pooling) minus the other's; the mean of those differences with a
    bootstrap interval over features says whether one is above the other beyond the spread
    between features, which two overlapping per-method intervals cannot. With ground truth the
    features are the clear ones and the correctness difference (1 if the explanation names the
    feature's concept) is added; without it, every feature the two labels share.

    Args:
        scores: Per-explanation scores with ``method_label``, ``feature``, ``explanation``,
            ``auroc_max`` and ``is_control`` (as from :class:`GenerationAUROCScorer`).
        ground_truth: The world's :class:`~vis_steer_lens.evaluate.GroundTruth`, or ``None``.
        seed: Seed of the bootstrap intervals.
        scorers: Other scorers' columns of ``scores`` (named after the scorer, as
            :func:`merged_scores` writes them): each adds ``<scorer>_margin``,
            ``<scorer>_margin_lo`` and ``<scorer>_margin_hi``, paired the same way.

    When ``scores`` has the ``"ground truth"`` row (:meth:`GroundTruth.explanations`), its margin
    over a control is what a correct one-word explanation gains under this scorer, and each
    row's ``auroc_share_of_ceiling`` is its AUROC margin divided by that one.

    Returns:
        One row per (method, control or other method): ``method_label, control`` (the label it is
        compared with), ``compared_with`` (``"control"`` or ``"method"``), ``features``
        (``"clear"`` or ``"shared"``), ``n_features``, ``auroc_margin, auroc_margin_lo,
        auroc_margin_hi``, ``accuracy_margin, accuracy_margin_lo, accuracy_margin_hi`` (NaN
        without ground truth) and ``auroc_share_of_ceiling``. Controls come first.
    """
    columns = [
        "method_label",
        "control",
        "compared_with",
        "features",
        "n_features",
        "auroc_margin",
        "auroc_margin_lo",
        "auroc_margin_hi",
        "accuracy_margin",
        "accuracy_margin_lo",
        "accuracy_margin_hi",
    ]
    frame = scores.copy()
    frame["feature"] = frame["feature"].astype(int)
    subset = "shared"
    if ground_truth is not None:
        truth = ground_truth.clear_concepts()
        frame = frame[frame["feature"].isin(truth.index)].copy()
        frame["correct"] = [
            float(isinstance(text, str) and ground_truth.is_correct(text, truth[feature]))
            for feature, text in zip(frame["feature"], frame["explanation"], strict=True)
        ]
        subset = "clear"
    per_label = {
        label: group.drop_duplicates("feature", keep="last").set_index("feature")
        for label, group in frame.groupby("method_label", sort=False)
    }
    if "is_control" in frame:
        is_control = frame["is_control"].astype(bool)
    else:  # rows from before explainers recorded it: controls are the other directions
        is_control = frame["direction"] != "sae"
    controls = list(dict.fromkeys(frame.loc[is_control, "method_label"]))
    methods = [label for label in per_label if label not in controls]
    rows = []
    for others, kind in ((controls, "control"), (methods, "method")):
        for label in methods:
            for other in others:
                if other == label:
                    continue
                mine, theirs = per_label[label], per_label[other]
                shared = mine.index.intersection(theirs.index)
                auroc = (float("nan"),) * 3
                if "auroc_max" in mine:
                    auroc = bootstrap_mean_ci(
                        mine.loc[shared, "auroc_max"].to_numpy(float)
                        - theirs.loc[shared, "auroc_max"].to_numpy(float),
                        seed=seed,
                    )
                extras = []
                for name in scorers:
                    extras.extend(
                        bootstrap_mean_ci(
                            mine.loc[shared, name].to_numpy(float) - theirs.loc[shared, name].to_numpy(float),
                            seed=seed,
                        )
                    )
                accuracy = (float("nan"),) * 3
                if ground_truth is not None:
                    accuracy = bootstrap_mean_ci(
                        mine.loc[shared, "correct"].to_numpy(float)
                        - theirs.loc[shared, "correct"].to_numpy(float),
                        seed=seed,
                    )
                rows.append([label, other, kind, subset, len(shared), *auroc, *accuracy, *extras])
    columns += [f"{name}_margin{end}" for name in scorers for end in ("", "_lo", "_hi")]
    margins = pd.DataFrame(rows, columns=columns)
    ceiling = margins[margins["method_label"] == GROUND_TRUTH_METHOD].set_index("control")["auroc_margin"]
    margins["auroc_share_of_ceiling"] = [
        margin / ceiling[other]
        if kind == "control" and other in ceiling.index and ceiling[other] > 0
        else float("nan")
        for margin, other, kind in zip(
            margins["auroc_margin"], margins["control"], margins["compared_with"], strict=True
        )
    ]
    return margins


#: The name a scorer has in the agreement table, by its column in :func:`merged_scores`.
_AGREEMENT_NAMES = {"auroc_max": "generation_auroc", **{name: name for name in SCORER_COLUMNS}}


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair of ``a`` and ``b`` (``[n_boot, n]`` each); NaN for a constant row."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra = ra - ra.mean(axis=1, keepdims=True)
    rb = rb - rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def scorer_agreement(
    merged: pd.DataFrame,
    ground_truth: GroundTruth | None = None,
    *,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Spearman rank correlation between every two scorers over explanations, with bootstrap intervals.

    The units are explanations (one per method label and feature; the ``"ground truth"`` row is
    left out, it is not a method's answer): do two scorers rank the same explanations alike?
    With ground truth, every scorer is also correlated with correctness (1 when the explanation
    names its feature's concept) over the explanations of the clear features.

    Args:
        merged: :func:`merged_scores` output.
        ground_truth: The world's ground truth, or ``None``.
        seed: Seed of the bootstrap.
        n_boot: Bootstrap resamples (of explanations).
        level: Interval coverage.

    Returns:
        One row per scorer pair: ``scorer, other, features`` (``"clear"`` against ground truth, else
        ``"all"``), ``n`` (explanations both scored), ``spearman, spearman_lo, spearman_hi``.
    """
    columns = ["scorer", "other", "features", "n", "spearman", "spearman_lo", "spearman_hi"]
    frame = merged[merged["method_label"] != GROUND_TRUTH_METHOD].copy()
    metrics = [c for c in _AGREEMENT_NAMES if c in frame and frame[c].notna().any()]
    pairs = [(a, b, "all") for i, a in enumerate(metrics) for b in metrics[i + 1 :]]
    if ground_truth is not None:
        truth = ground_truth.clear_concepts()
        clear = frame["feature"].isin(truth.index)
        frame.loc[clear, "ground_truth"] = [
            float(isinstance(text, str) and ground_truth.is_correct(text, truth[int(feature)]))
            for feature, text in zip(
                frame.loc[clear, "feature"], frame.loc[clear, "explanation"], strict=True
            )
        ]
        pairs += [(a, "ground_truth", "clear") for a in metrics]
    rng = np.random.default_rng(seed)
    rows = []
    for a, b, subset in pairs:
        both = frame[[a, b]].dropna().to_numpy(float)
        n = len(both)
        name_a, name_b = _AGREEMENT_NAMES.get(a, a), _AGREEMENT_NAMES.get(b, b)
        if n < 3:
            rows.append([name_a, name_b, subset, n, float("nan"), float("nan"), float("nan")])
            continue
        rho = float(_spearman_rows(both[None, :, 0], both[None, :, 1])[0])
        take = rng.integers(0, n, size=(n_boot, n))
        boot = _spearman_rows(both[take, 0], both[take, 1])
        boot = boot[~np.isnan(boot)]
        alpha = (1 - level) / 2
        lo, hi = np.quantile(boot, [alpha, 1 - alpha]) if len(boot) else (np.nan, np.nan)
        rows.append([name_a, name_b, subset, n, rho, float(lo), float(hi)])
    return pd.DataFrame(rows, columns=columns)


def format_agreement(agreement: pd.DataFrame) -> str:
    """The scorer agreement as text: ``rho [lo, hi]`` per scorer pair."""
    lines = [
        "Rank agreement between scorers over explanations (Spearman, 95% bootstrap intervals):",
        f"{'scorer':<26}{'other':<26}{'features':<10}{'n':>6}{'Spearman':>24}",
    ]
    for _, row in agreement.iterrows():
        lines.append(
            f"{row['scorer']:<26}{row['other']:<26}{row['features']:<10}{int(row['n']):>6}"
            f"{row['spearman']:>+10.3f} [{row['spearman_lo']:+.2f}, {row['spearman_hi']:+.2f}]"
        )
    return "\n".join(lines)


def control_margins(scores: pd.DataFrame, ground_truth: GroundTruth, seed: int = 0) -> pd.DataFrame:
    """Each method's paired margin over each control on the clear features: the control rows of
    :func:`paired_margins` with ground truth."""
    margins = paired_margins(scores, ground_truth, seed=seed)
    return margins[margins["compared_with"] == "control"].reset_index(drop=True)


def format_margins(margins: pd.DataFrame) -> str:
    """The paired margins as text, the controls first, then method against method: ``value [lo, hi]``
    per pair, the ground-truth accuracy margin where there is ground truth, and the share of the
    ground truth's AUROC margin where that row exists."""
    has_accuracy = margins["accuracy_margin"].notna().any()
    has_auroc = margins["auroc_margin"].notna().any()
    scorers = [n for n in SCORER_COLUMNS if f"{n}_margin" in margins]
    share = "auroc_share_of_ceiling" in margins and margins["auroc_share_of_ceiling"].notna().any()
    subset = margins["features"].iloc[0] if len(margins) else "shared"
    where = "the clear features" if subset == "clear" else "the features both explained"
    blocks = []
    for kind, title in (("control", "over the controls"), ("method", "between methods")):
        part = margins[margins["compared_with"] == kind]
        if not len(part):
            continue
        columns = [("auroc_margin", "AUROC max margin")] if has_auroc else []
        columns += [("accuracy_margin", "GT accuracy margin")] if has_accuracy else []
        columns += [(f"{n}_margin", f"{_SHORT.get(n, n)} margin") for n in scorers]
        header = f"{'method':<16}{'over':<30}{'n':>5}" + "".join(f"{t:>26}" for _, t in columns)
        header += f"{'of ceiling':>12}" if share and kind == "control" else ""
        lines = [f"Paired margins {title}, on {where} (95% bootstrap intervals):", header]
        for _, row in part.iterrows():
            cells = "".join(
                f"{row[c]:>+16.3f} [{row[c + '_lo']:+.2f}, {row[c + '_hi']:+.2f}]" for c, _ in columns
            )
            if share and kind == "control":
                cells += f"{row['auroc_share_of_ceiling']:>12.0%}"
            lines.append(f"{row['method_label']:<16}{row['control']:<30}{int(row['n_features']):>5}{cells}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def clear_feature_auroc(scores: pd.DataFrame, ground_truth: GroundTruth, seed: int = 0) -> pd.DataFrame:
    """Mean AUROC (max pooling) per method label over the features with a clear ground-truth concept.

    Most live features of an SAE detect backgrounds, positions or mixtures that no short text pins
    down; their AUROCs sit near 0.5 for every method and wash out the mean over all features.

    Args:
        scores: Per-explanation scores with ``method_label``, ``feature`` and ``auroc_max``.
        ground_truth: The world's :class:`~vis_steer_lens.evaluate.GroundTruth`.
        seed: Seed of the bootstrap interval.

    Returns:
        ``method_label, clear_auroc_max, clear_auroc_max_lo, clear_auroc_max_hi``.
    """
    clear = set(ground_truth.clear_concepts().index)
    rows = []
    for label, group in scores.groupby("method_label", sort=False):
        values = group.loc[group["feature"].astype(int).isin(clear), "auroc_max"].to_numpy(dtype=float)
        mean, lo, hi = bootstrap_mean_ci(values, seed=seed)
        rows.append(
            {
                "method_label": label,
                "clear_auroc_max": mean,
                "clear_auroc_max_lo": lo,
                "clear_auroc_max_hi": hi,
            }
        )
    return pd.DataFrame(
        rows, columns=["method_label", "clear_auroc_max", "clear_auroc_max_lo", "clear_auroc_max_hi"]
    )


def comparison_figure(table: pd.DataFrame) -> go.Figure:
    """Bars per method: mean AUROC (mean and max pooling) and ground-truth accuracy, with 95% intervals."""
    panels = [("auroc_mean", "AUROC (mean over patches)"), ("auroc_max", "AUROC (max over patches)")]
    if "clear_auroc_max" in table:
        panels.append(("clear_auroc_max", "AUROC (max), clear features"))
    if "accuracy" in table:
        panels.append(("accuracy", "ground-truth accuracy"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title in panels])
    for col, (column, _) in enumerate(panels, start=1):
        fig.add_trace(
            go.Bar(
                x=table["method_label"],
                y=table[column],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=table[f"{column}_hi"] - table[column],
                    arrayminus=table[column] - table[f"{column}_lo"],
                ),
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(range=[0, 1.05], row=1, col=col)
    fig.update_layout(title="Explanation methods compared (95% bootstrap intervals)", template="plotly_white")
    return fig


def format_table(table: pd.DataFrame) -> str:
    """The comparison as text: ``value [lo, hi]`` per metric."""
    lines = []
    columns = [(c, n) for c, n in (("auroc_mean", "AUROC mean"), ("auroc_max", "AUROC max")) if c in table]
    optional = (("clear_auroc_max", "AUROC max (clear)"), ("accuracy", "GT accuracy"))
    columns += [(c, n) for c, n in optional if c in table]
    for name in SCORER_COLUMNS:  # other scorers: over the clear features where there is ground truth
        if f"clear_{name}" in table:
            columns.append((f"clear_{name}", f"{_SHORT.get(name, name)} (clear)"))
        elif name in table:
            columns.append((name, _SHORT.get(name, name)))
    pooled = "global_auroc_mean" in table
    header = f"{'method':<32}" + "".join(f"{name:>22}" for _, name in columns)
    header += f"{'global AUROC (mean/max)':>26}" if pooled else ""
    lines.append(header)
    for _, row in table.iterrows():
        cells = "".join(f"{row[c]:>8.3f} [{row[c + '_lo']:.2f}, {row[c + '_hi']:.2f}]" for c, _ in columns)
        tail = f"{row['global_auroc_mean']:>14.3f} / {row['global_auroc_max']:.3f}" if pooled else ""
        lines.append(f"{row['method_label']:<32}{cells}{tail}")
    return "\n".join(lines)


#: Short column titles of the scorers in :func:`format_table`.
_SHORT = {
    "clip": "CLIP",
    "segmentation_iou": "seg. IoU",
    "segmentation_iou_union": "seg. IoU (union)",
    "detection": "detection",
    "likelihood": "likelihood",
}
