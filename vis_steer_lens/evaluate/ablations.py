"""Ablations as one command: explain the same features along one axis and score each point.

``vis-steer-lens sweep --run RUN --axis AXIS`` writes ``RUN/sweeps/<axis>.csv`` (one row per point)
and ``RUN/sweeps/<axis>.html`` (its plotly figure). Each point explains the run's features by
steering (or the hybrid) with one setting changed and scores the answers with what the run has:
ground-truth accuracy on the clear features (worlds with ground truth) and the segmentation IoU
with a registered segmenter (the toy world's by default).

Axes:

* ``base-image``: the empty image steered (:data:`vis_steer_lens.choices.EMPTY_IMAGES`: white,
  black, gray, the processor's mean colour, ``zeros`` (zero pixel values at the tower's input),
  ``noise`` (uniform pixel noise, seeded)), and ``zero-at-hook`` (the residual at the SAE's hook
  replaced by zeros before the direction is added: the direction alone), at the run's coefficient.
* ``coefficient``: multiples of the hook's mean patch norm (the run's calibration unit).
* ``target``: steering the feature's SAE direction on the empty image's activation
  (``steering``) or on its SAE reconstruction (``reconstruction``), the hybrid with the feature's
  own direction (``hybrid``), and the control that keeps the feature's top images and steers
  another feature's direction in the hybrid (``hybrid-permuted``).
* ``layer``: one SAE per hook layer (:func:`run_layer_sweep`): the run's SAE and the others given
  (or, on a world whose plug-in provides them, e.g. the toy world, its SAEs of the other layers).
  Features differ per SAE, so each point explains its own SAE's clear features (from the world's
  ground truth, built per SAE) and scores the share whose concept is named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vis_steer_lens.atomic import atomic_path
from vis_steer_lens.choices import EMPTY_IMAGES
from vis_steer_lens.evaluate.metrics import bootstrap_mean_ci

#: The axes ``sweep`` knows.
AXES = ("base-image", "coefficient", "layer", "target")
#: Coefficient multiples of the hook's mean patch norm tried on the ``coefficient`` axis.
COEFFICIENT_MULTIPLES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: Points of the ``target`` axis: (label, method, direction, what steering adds the direction to).
TARGETS = (
    ("steering", "steering", "sae", "activation"),
    ("reconstruction", "steering", "sae", "reconstruction"),
    ("hybrid", "hybrid", "sae", "activation"),
    ("hybrid-permuted", "hybrid", "permuted", "activation"),
)
#: The base-image point that zeroes the residual at the hook (steering's ``steer_on="zero"``).
ZERO_AT_HOOK = "zero-at-hook"


class SweepError(ValueError):
    """An axis or setting the sweep cannot run; the message says what to pass instead."""


def sweep_points(axis: str, run: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(value, explainer settings)`` per point of an axis.

    Raises:
        SweepError: For an axis the run cannot sweep (``layer``; ``coefficient`` without a sweep's
            patch norm; any axis before the run has a coefficient).
    """
    choice = run.coefficient()
    if axis not in AXES:
        raise SweepError(f"Unknown axis {axis!r}; choose one of {AXES}.")
    if choice is None:
        raise SweepError(
            f"The sweep steers at the run's coefficient: {run.root} has none; run `vis-steer-lens explain "
            f"--run {run.root} --method steering` first."
        )
    base = {
        "method": "steering",
        "direction": "sae",
        "coefficient": choice.coefficient,
        "empty_image": choice.empty_image,
        "steer_on": "activation",
    }
    if axis == "layer":  # one point per SAE; the points are the SAEs (run_layer_sweep)
        return [(choice.hook_name, base)]
    if axis == "base-image":
        points = [(kind, {**base, "empty_image": kind}) for kind in EMPTY_IMAGES]
        return [*points, (ZERO_AT_HOOK, {**base, "steer_on": "zero"})]
    if axis == "coefficient":
        if not choice.patch_norm:
            raise SweepError(
                "--axis coefficient needs the hook's patch norm, recorded by the run's coefficient sweep "
                "(`explain --coefficient auto`); this run's coefficient was fixed."
            )
        return [(f"{m:g}x", {**base, "coefficient": m * choice.patch_norm}) for m in COEFFICIENT_MULTIPLES]
    if axis == "target":
        return [
            (label, {**base, "method": method, "direction": direction, "steer_on": steer_on})
            for label, method, direction, steer_on in TARGETS
        ]
    raise SweepError(f"Unknown axis {axis!r}; choose one of {AXES}.")


def run_sweep(
    run: Any,
    vlm: Any,
    sae: Any,
    axis: str,
    features: Sequence[int],
    *,
    prompt: str = "default",
    max_new_tokens: int = 40,
    batch_size: int = 32,
    seed: int = 0,
    segmenter: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Explain ``features`` at each point of ``axis`` and score every point.

    Args:
        run: The :class:`~vis_steer_lens.RunFolder` (its coefficient, mined images, ground truth).
        vlm: The subject HookedVLM.
        sae: The run's SAE.
        axis: One of :data:`AXES`.
        features: The features explained at every point.
        prompt: Prompt preset.
        max_new_tokens: Generation cap.
        batch_size: Features per batch.
        seed: Seeds the explainers (the permuted control's pairing).
        segmenter: A segmenter for the IoU column (``None``: no IoU).
        progress: Show progress bars.

    Returns:
        One row per point: ``axis, value, method, direction, empty_image, coefficient,
        n_features``, with ground truth ``n_clear, n_correct, accuracy, accuracy_lo, accuracy_hi``,
        with a segmenter ``segmentation_iou`` (and its interval), and ``examples`` (a few answers).
        Written to ``RUN/sweeps/<axis>.csv`` and ``<axis>.html``.
    """
    from vis_steer_lens.evaluate.segmentation_iou import SegmentationIoUScorer
    from vis_steer_lens.explain import make_explainer

    points = sweep_points(axis, run)
    features = [int(f) for f in features]
    if not features:
        raise SweepError("The sweep has no features to explain; pass --features (e.g. 'clear' or '0:64').")
    mined = run.mined() if run.has_mined() else None
    truth = run.ground_truth()
    clear = truth.clear_concepts() if truth is not None else None
    rows = []
    for value, point in points:
        if point["method"] == "hybrid" and mined is None:
            raise SweepError(
                f"The {value} point explains from the run's top images: run `mine` on {run.root} first."
            )
        steering_only = {"steer_on": point["steer_on"]} if point["method"] == "steering" else {}
        explainer = make_explainer(
            point["method"],
            vlm,
            sae,
            mined=mined,
            coefficient=point["coefficient"] if point["method"] == "steering" else 1.0,
            empty_image=point["empty_image"],
            batch_size=batch_size if point["method"] == "steering" else max(1, batch_size // 4),
            direction=point["direction"],
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            seed=seed,
            **steering_only,
        )
        answers = explainer.explain(features, progress=progress)
        answers = answers[answers["flag"].astype(object) != "dead"] if "flag" in answers else answers
        row: dict[str, Any] = {
            "axis": axis,
            "value": value,
            "method": point["method"],
            "direction": point["direction"],
            "empty_image": point["empty_image"],
            "steer_on": point["steer_on"] if point["method"] == "steering" else "",
            "coefficient": point["coefficient"] if point["method"] == "steering" else float("nan"),
            "n_features": int(len(answers)),
        }
        if clear is not None:
            row.update(_accuracy_columns(answers, truth, clear, seed))
        if segmenter is not None and mined is not None:
            scored = SegmentationIoUScorer(segmenter, mined).score(answers, progress=False)
            mean, lo, hi = bootstrap_mean_ci(scored["segmentation_iou"].to_numpy(float), seed=seed)
            row.update({"segmentation_iou": mean, "segmentation_iou_lo": lo, "segmentation_iou_hi": hi})
        row["examples"] = " | ".join(str(t) for t in answers["explanation"].head(5))
        rows.append(row)
    return write_sweep(run, axis, pd.DataFrame(rows))


def run_layer_sweep(
    run: Any,
    vlm: Any,
    sae: Any,
    layer_saes: Mapping[str, Any],
    *,
    ground_truth_builder: Any = None,
    features: Sequence[int] | None = None,
    n_ground_truth: int = 2000,
    max_features: int | None = None,
    prompt: str = "default",
    max_new_tokens: int = 40,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """The ``layer`` axis: explain each layer's SAE's features by steering and score each layer.

    Features differ per SAE, so each point explains its own SAE's features: with a ground-truth
    builder (a world that knows each feature's concept, e.g. the toy world's), its clear features,
    scored by the share whose concept the answer names (and how many distinct concepts are named);
    without one, ``features`` (ids, the same for every SAE). Each layer steers at the run's
    multiple of that layer's own mean patch norm (a fixed coefficient of the run, as given).

    Args:
        run: The :class:`~vis_steer_lens.RunFolder` (its coefficient; its ground truth for its SAE).
        vlm: The subject HookedVLM.
        sae: The run's SAE (one point).
        layer_saes: ``hook -> SAE`` of the other layers.
        ground_truth_builder: ``builder(vlm, sae, *, n_images, seed, progress) -> GroundTruth``
            (``plugins.GROUND_TRUTH_BUILDERS``), or ``None``.
        features: Without a builder: the feature ids explained at every layer.
        n_ground_truth: Fresh scenes each layer's ground truth is built on.
        max_features: Explain at most this many clear features per layer (a seeded sample).
        prompt: Prompt preset.
        max_new_tokens: Generation cap.
        batch_size: Features per batch.
        seed: Seeds the samples.
        progress: Show progress bars.

    Returns:
        One row per layer, in layer order: ``axis, value`` (the hook), ``layer, coefficient,
        multiple, n_live, n_features``, with ground truth the accuracy columns, and ``examples``.

    Raises:
        SweepError: Without other layers' SAEs, without a coefficient, or with neither a
            ground-truth builder nor features.
    """
    from vis_steer_lens.explain.steering import SteeringExplainer
    from vis_steer_lens.explain.sweep import sample_features
    from vis_steer_lens.saes.validation import check_sae_steers

    choice = run.coefficient()
    if choice is None:
        raise SweepError(
            f"The sweep steers at the run's coefficient: {run.root} has none; run `vis-steer-lens explain "
            f"--run {run.root} --method steering` first."
        )
    if not layer_saes:
        raise SweepError("--axis layer needs SAEs of other layers (--saes HOOK=PATH ...); none were given.")
    if ground_truth_builder is None and not features:
        raise SweepError("--axis layer without ground truth explains the same feature ids: pass --features.")
    saes = {check_sae_steers(sae, vlm): sae}
    for label, layer_sae in layer_saes.items():
        try:
            hook = check_sae_steers(layer_sae, vlm, method="the layer sweep")
        except ValueError as err:
            raise SweepError(f"The SAE given for {label}: {err}") from None
        saes.setdefault(hook, layer_sae)
    order = sorted(saes, key=lambda hook: (vlm.vision.parse_hook_name(hook).layer or 0, hook))
    rows = []
    for hook in order:
        layer_sae = saes[hook]
        truth = run.ground_truth() if layer_sae is sae else None
        if truth is None and ground_truth_builder is not None:
            truth = ground_truth_builder(vlm, layer_sae, n_images=n_ground_truth, seed=303, progress=progress)
        explainer = SteeringExplainer(
            vlm,
            layer_sae,
            1.0,
            empty_image=choice.empty_image,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
        )
        norm = explainer.patch_norm()
        if choice.multiple is not None and layer_sae is not sae:
            explainer.coefficient = choice.multiple * norm
        else:
            explainer.coefficient = choice.coefficient
        if truth is not None:
            clear = truth.clear_concepts()
            chosen = [int(f) for f in clear.index]
            n_live = len(truth.table)
        else:
            clear, n_live = None, None
            chosen = [int(f) for f in features if int(f) < int(layer_sae.cfg.d_sae)]
        if max_features is not None:
            chosen = sample_features(chosen, max_features, seed)
        answers = (
            explainer.explain(chosen, progress=progress)
            if chosen
            else pd.DataFrame({"feature": [], "explanation": []})
        )
        row: dict[str, Any] = {
            "axis": "layer",
            "value": hook,
            "layer": vlm.vision.parse_hook_name(hook).layer,
            "coefficient": float(explainer.coefficient),
            "multiple": float(explainer.coefficient) / norm if norm else float("nan"),
            "n_live": n_live,
            "n_features": int(len(answers)),
        }
        if clear is not None:
            row.update(_accuracy_columns(answers, truth, clear, seed))
        row["examples"] = " | ".join(str(t) for t in answers["explanation"].head(5))
        rows.append(row)
    return write_sweep(run, "layer", pd.DataFrame(rows))


def _accuracy_columns(answers: pd.DataFrame, truth: Any, clear: pd.Series, seed: int) -> dict[str, Any]:
    """Ground-truth columns of one point: the share of clear features whose concept the answer names
    (with a bootstrap interval), and how many distinct clear concepts some answer names."""
    shown = answers[answers["feature"].astype(int).isin(clear.index)]
    correct = [
        float(isinstance(t, str) and truth.is_correct(t, clear[int(f)]))
        for f, t in zip(shown["feature"], shown["explanation"], strict=True)
    ]
    named = {clear[int(f)] for f, ok in zip(shown["feature"], correct, strict=True) if ok}
    mean, lo, hi = bootstrap_mean_ci(correct, seed=seed)
    return {
        "n_clear": len(correct),
        "n_correct": int(sum(correct)),
        "accuracy": mean,
        "accuracy_lo": lo,
        "accuracy_hi": hi,
        "n_concepts": int(clear[clear.index.isin(shown["feature"].astype(int))].nunique()),
        "n_concepts_named": len(named),
    }


def write_sweep(run: Any, axis: str, table: pd.DataFrame) -> pd.DataFrame:
    """Write a sweep's table and figure to ``RUN/sweeps/<axis>.csv`` and ``.html``; return the table."""
    folder = run.root / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / f"{axis}.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(folder / f"{axis}.html") as tmp:
        sweep_points_figure(table).write_html(tmp, include_plotlyjs=True)
    return table


def sweep_points_figure(table: pd.DataFrame):
    """Bars per point of a sweep: accuracy and segmentation IoU with their intervals."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for column, name in (
        ("accuracy", "ground-truth accuracy (clear features)"),
        ("segmentation_iou", "segmentation IoU"),
    ):
        if column not in table:
            continue
        fig.add_trace(
            go.Bar(
                x=table["value"],
                y=table[column],
                name=name,
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=table[f"{column}_hi"] - table[column],
                    arrayminus=table[column] - table[f"{column}_lo"],
                ),
            )
        )
    axis = table["axis"].iloc[0] if len(table) else ""
    fig.update_layout(
        title=f"Sweep along {axis} (95% bootstrap intervals)", barmode="group", template="plotly_white"
    )
    fig.update_yaxes(range=[0, 1.05])
    return fig


def format_sweep(table: pd.DataFrame) -> str:
    """A sweep's table as text: one line per point (concepts named: distinct clear concepts some
    answer names, of those among the explained features)."""
    width = max([18, *(len(str(v)) + 2 for v in table["value"])])
    lines = [f"{'value':<{width}}{'n':>5}{'GT accuracy':>24}{'named':>8}{'seg. IoU':>24}  examples"]
    for _, row in table.iterrows():
        cells = ""
        for column in ("accuracy", "segmentation_iou"):
            value = row.get(column, np.nan)
            cells += (
                f"{value:>10.3f} [{row[column + '_lo']:.2f}, {row[column + '_hi']:.2f}]"
                if column in row and not pd.isna(value)
                else f"{'':>24}"
            )
            if column == "accuracy":
                named = row.get("n_concepts_named", np.nan)
                cells += f"{int(named):>4}/{int(row['n_concepts']):<3}" if not pd.isna(named) else f"{'':>8}"
        lines.append(
            f"{row['value']:<{width}}{int(row['n_features']):>5}{cells}  {str(row['examples'])[:60]}"
        )
    return "\n".join(lines)


__all__ = [
    "AXES",
    "COEFFICIENT_MULTIPLES",
    "TARGETS",
    "SweepError",
    "ZERO_AT_HOOK",
    "format_sweep",
    "run_layer_sweep",
    "run_sweep",
    "write_sweep",
    "sweep_points_figure",
]
