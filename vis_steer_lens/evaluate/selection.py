"""Scorers that choose a run's steering coefficient (``explain --coefficient auto --select-by NAME``).

The coefficient sweep explains a sample of validation features at each multiple of the hook's
patch norm; by default the distinct-answers rule picks the multiple
(:func:`~vis_steer_lens.explain.sweep.sweep_table`). With a scorer, the multiple whose rows score
best on average wins, as the paper picks its coefficient by the mean segmentation IoU on held-out
features. :func:`make_selector` builds that scorer from its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vis_steer_lens.choices import SELECT_BY


class SelectorError(ValueError):
    """A ``select_by`` name or setting that cannot choose a coefficient; the message says what to pass."""


def make_selector(
    name: str,
    vlm: Any,
    sae: Any,
    mined: Any,
    *,
    segmenter: Any = None,
    images: Sequence[Any] | None = None,
    n_activating: int = 5,
    n_random: int = 5,
    seed: int = 0,
    pool_key: str | None = None,
):
    """The ``select_by`` of :func:`~vis_steer_lens.explain.calibration.calibrate_run` for a scorer name.

    Args:
        name: One of :data:`SELECT_BY`; ``"distinct"`` gives ``None`` (the default rule).
        vlm: The subject :class:`~vis_steer_lens.HookedVLM` (likelihood, detection).
        sae: The run's SAE.
        mined: The run's :class:`~vis_steer_lens.MinedActivations` (top images and maps).
        segmenter: The segmenter of ``segmentation_iou`` (e.g. ``plugins.SEGMENTERS.get("toy")()``).
        images: The held-out image pool of ``likelihood`` and ``detection``.
        n_activating: Activating images per feature (likelihood, detection).
        n_random: Random images per feature (likelihood, detection).
        seed: Seeds the held-out draws.
        pool_key: Names the image pool in the scorer's settings.

    Returns:
        ``None`` for ``"distinct"``, else a callable ``rows -> float`` (the mean score over one
        multiple's rows) whose ``name`` is ``name``.

    Raises:
        SelectorError: An unknown name, or a scorer without what it needs.
    """
    from vis_steer_lens.explain.sweep import scorer_selector

    if name not in SELECT_BY:
        raise SelectorError(f"select_by must be one of {SELECT_BY}; got {name!r}.")
    if name == "distinct":
        return None
    if mined is None:
        raise SelectorError(
            f"Selecting the coefficient by {name} reads the run's mined top images; mine the run first."
        )
    if name.startswith("segmentation_iou"):
        from vis_steer_lens.evaluate.segmentation_iou import SegmentationIoUScorer

        if segmenter is None:
            raise SelectorError(f"Selecting the coefficient by {name} needs a segmenter; pass one.")
        variant = "union" if name == "segmentation_iou_union" else "first"
        return scorer_selector(SegmentationIoUScorer(segmenter, mined, variant=variant))
    from vis_steer_lens.evaluate.vlm_scorers import DetectionScorer, LikelihoodScorer

    if images is None or len(images) == 0:
        raise SelectorError(f"Selecting the coefficient by {name} needs a held-out image pool; pass images.")
    scorer_class = LikelihoodScorer if name == "likelihood" else DetectionScorer
    scorer = scorer_class(
        vlm,
        sae,
        images,
        mined=mined,
        n_activating=n_activating,
        n_random=n_random,
        seed=seed,
        pool_key=pool_key,
    )
    return scorer_selector(scorer)


__all__ = ["SELECT_BY", "SelectorError", "make_selector"]
