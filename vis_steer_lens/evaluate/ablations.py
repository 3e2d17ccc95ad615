"""Ablations as one command: explain the same features along one axis and score each point.

``vis-steer-lens sweep --run RUN --axis AXIS`` writes ``RUN/sweeps/<axis>.csv`` (one row per point)
and ``RUN/sweeps/<axis>.html`` (its plotly figure). Each point explains the run's features by
steering (or the hybrid) with one setting changed and scores the answers with what the run has:
ground-truth accuracy on the clear features (worlds with ground truth) and the segmentation IoU
with a registered segmenter (the toy world's by default).

Axes:

* ``base-image``: the empty image steered (:data:`vis_steer_lens.choices.EMPTY_IMAGES`: white,
  black, gray, the processor's mean colour, and ``zeros``, the zero embedding at the tower's input),
  at the run's coefficient.
* ``coefficient``: multiples of the hook's mean patch norm (the run's calibration unit).
* ``target``: steering the feature's SAE direction (``steering``), the hybrid with the feature's
  own direction (``hybrid``), and the control that keeps the feature's top images and steers
  another feature's direction in the hybrid (``hybrid-permuted``).
* ``layer``: one SAE per hook layer; not built yet (the command says so).
"""

from __future__ import annotations

from collections.abc import Sequence
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
#: Points of the ``target`` axis: (label, method, direction).
TARGETS = (
    ("steering", "steering", "sae"),
    ("hybrid", "hybrid", "sae"),
    ("hybrid-permuted", "hybrid", "permuted"),
)


class SweepError(ValueError):
    """An axis or setting the sweep cannot run; the message says what to pass instead."""


def sweep_points(axis: str, run: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(value, explainer settings)`` per point of an axis.

    Raises:
        SweepError: For an axis the run cannot sweep (``layer``; ``coefficient`` without a sweep's
            patch norm; any axis before the run has a coefficient).
    """
    choice = run.coefficient()
    if axis == "layer":
        raise SweepError(
            "--axis layer needs one SAE per hook layer, which this run does not hold (a run has one SAE); "
            "train one per layer (benchmarks/toy_sae_layers.py) and sweep their runs. Not built yet."
        )
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
    }
    if axis == "base-image":
        return [(kind, {**base, "empty_image": kind}) for kind in EMPTY_IMAGES]
    if axis == "coefficient":
        if not choice.patch_norm:
            raise SweepError(
                "--axis coefficient needs the hook's patch norm, recorded by the run's coefficient sweep "
                "(`explain --coefficient auto`); this run's coefficient was fixed."
            )
        return [(f"{m:g}x", {**base, "coefficient": m * choice.patch_norm}) for m in COEFFICIENT_MULTIPLES]
    if axis == "target":
        return [
            (label, {**base, "method": method, "direction": direction})
            for label, method, direction in TARGETS
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
        )
        answers = explainer.explain(features, progress=progress)
        answers = answers[answers["flag"].astype(object) != "dead"] if "flag" in answers else answers
        row: dict[str, Any] = {
            "axis": axis,
            "value": value,
            "method": point["method"],
            "direction": point["direction"],
            "empty_image": point["empty_image"],
            "coefficient": point["coefficient"] if point["method"] == "steering" else float("nan"),
            "n_features": int(len(answers)),
        }
        if clear is not None:
            shown = answers[answers["feature"].astype(int).isin(clear.index)]
            correct = [
                float(isinstance(t, str) and truth.is_correct(t, clear[int(f)]))
                for f, t in zip(shown["feature"], shown["explanation"], strict=True)
            ]
            mean, lo, hi = bootstrap_mean_ci(correct, seed=seed)
            row.update(
                {
                    "n_clear": len(correct),
                    "n_correct": int(sum(correct)),
                    "accuracy": mean,
                    "accuracy_lo": lo,
                    "accuracy_hi": hi,
                }
            )
        if segmenter is not None and mined is not None:
            scored = SegmentationIoUScorer(segmenter, mined).score(answers, progress=False)
            mean, lo, hi = bootstrap_mean_ci(scored["segmentation_iou"].to_numpy(float), seed=seed)
            row.update({"segmentation_iou": mean, "segmentation_iou_lo": lo, "segmentation_iou_hi": hi})
        row["examples"] = " | ".join(str(t) for t in answers["explanation"].head(5))
        rows.append(row)
    table = pd.DataFrame(rows)
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
    """A sweep's table as text: one line per point."""
    lines = [f"{'value':<18}{'n':>5}{'GT accuracy':>24}{'seg. IoU':>24}  examples"]
    for _, row in table.iterrows():
        cells = ""
        for column in ("accuracy", "segmentation_iou"):
            value = row.get(column, np.nan)
            cells += (
                f"{value:>10.3f} [{row[column + '_lo']:.2f}, {row[column + '_hi']:.2f}]"
                if column in row and not pd.isna(value)
                else f"{'':>24}"
            )
        lines.append(f"{row['value']:<18}{int(row['n_features']):>5}{cells}  {str(row['examples'])[:60]}")
    return "\n".join(lines)


__all__ = [
    "AXES",
    "COEFFICIENT_MULTIPLES",
    "TARGETS",
    "SweepError",
    "format_sweep",
    "run_sweep",
    "sweep_points_figure",
]
