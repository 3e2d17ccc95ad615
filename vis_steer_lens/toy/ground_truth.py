"""Toy-world ground truth: which concept does each feature detect, and do explanations name it?

The toy world's :class:`~vis_steer_lens.evaluate.GroundTruth` plug-in (``toy_ground_truth``).

On fresh toy-world images every concept's presence is known, so each feature can be scored against
each concept: the AUROC of "the image contains the concept" predicted by the feature's activation
(max over patches). Patch-level scoring ("this patch contains the concept" vs the patch's own
activation) is exact as well, because every object fills one 16-pixel cell, i.e. one patch.

Background context. Every toy object sits on a black or a white background, and the vision tower
represents "a red object on black" quite differently from "a red object on white". SAEs on it learn
many features that detect an object concept only on one background: such a feature is a perfect red
detector on black scenes, yet over all scenes "contains red" predicts it at AUROC ~0.75, because
half of the red scenes are white ones where it is silent. With ``context="background"`` (the
default) each feature is scored inside its context: the background whose scenes carry at least
``CONTEXT_SHARE`` of its activation mass, or all scenes when it fires on both. The pooled AUROC
over all scenes is kept alongside (``pooled_auroc``) so the strict number is never hidden.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from vis_steer_lens.evaluate.encoding import FeatureEncoder, make_encoder
from vis_steer_lens.evaluate.ground_truth import GroundTruth
from vis_steer_lens.evaluate.metrics import auroc_matrix
from vis_steer_lens.toy.renderer import concepts_in_text
from vis_steer_lens.toy.world import CATEGORIES, CONCEPT_CATEGORY, NUM_CELLS, ToyWorld

CONCEPTS: list[str] = [concept for concepts in CATEGORIES.values() for concept in concepts]
#: A feature's context is one background when that background's scenes carry at least this share of
#: the feature's activation mass (sum over scenes of its max over patches).
CONTEXT_SHARE = 0.9
#: ``context`` value of features scored on all scenes.
ALL_SCENES = "all scenes"
#: Columns of :func:`feature_concepts`.
CONCEPT_COLUMNS = [
    "feature",
    "concept",
    "category",
    "auroc",
    "pooled_auroc",
    "context",
    "n_positive",
    "fire_rate",
]


def feature_concepts(
    model: Any = None,
    sae: Any = None,
    n_images: int = 1000,
    seed: int = 12345,
    batch_size: int = 64,
    level: str = "image",
    processor: Any = None,
    encoder: FeatureEncoder | None = None,
    context: str | None = "background",
    progress: bool = False,
) -> pd.DataFrame:
    """AUROC of every (live feature, concept) pair on fresh toy-world images.

    Args:
        model: A HookedViT or HookedVLM of the toy world (64×64 images, 16-px patches).
        sae: The ``sae_lens.SAE`` to score.
        n_images: Fresh images drawn from ``ToyWorld(seed)``.
        seed: World seed; pick one the SAE and the explainers never saw.
        batch_size: Images per forward pass.
        level: ``"image"``: presence anywhere in the image vs the feature's max over patches;
            ``"patch"``: presence in a patch vs that patch's activation.
        processor: Image processor; the model's own when None.
        encoder: Instead of ``model`` and ``sae``: a callable ``images -> [n, 16, d_sae]``.
        context: ``"background"``: score each feature among the scenes of the background it is
            specific to, if any (see the module docstring); ``None``: always all scenes.
        progress: Show a progress bar over the images.

    Returns:
        Long form, one row per (live feature, concept): ``feature, concept, category, auroc``
        (in the feature's context), ``pooled_auroc`` (all scenes), ``context`` (a background name
        or ``"all scenes"``), ``n_positive`` (images or patches containing the concept, all
        scenes), ``fire_rate`` (share of images where the feature fires anywhere). Features that
        never fire are left out.
    """
    if level not in ("image", "patch"):
        raise ValueError(f"level must be 'image' or 'patch', got {level!r}.")
    if context not in ("background", None):
        raise ValueError(f"context must be 'background' or None, got {context!r}.")
    if n_images < 2:
        raise ValueError(f"n_images must be at least 2, got {n_images}.")
    encode = make_encoder(model, sae, encoder, processor)
    samples = ToyWorld(seed).sample(n_images)
    per_patch = []  # [batch, patches, d_sae] chunks
    from tqdm.auto import tqdm

    for start in tqdm(
        range(0, n_images, batch_size), desc="ground truth", unit="batch", disable=not progress
    ):
        acts = encode([image for image, _ in samples[start : start + batch_size]])
        if acts.ndim != 3 or acts.shape[1] != NUM_CELLS:
            raise ValueError(
                f"Expected activations [batch, {NUM_CELLS}, d_sae] (toy images have 16 patches, "
                f"no class token), got {tuple(acts.shape)}."
            )
        per_patch.append(acts)
    acts = torch.cat(per_patch).numpy()  # [n, 16, d_sae]
    image_max = acts.max(axis=1)  # [n, d_sae]
    live = np.flatnonzero((image_max > 0).any(axis=0))
    fire_rate = (image_max > 0).mean(axis=0)

    if level == "image":
        labels = np.array([[c in scene.concepts() for c in CONCEPTS] for _, scene in samples])  # [n, C]
        scores = image_max[:, live]
        rows_per_image = 1
    else:
        labels = np.array(
            [[c in cell for c in CONCEPTS] for _, scene in samples for cell in scene.cell_concepts()]
        )  # [n * 16, C]
        scores = acts[:, :, live].reshape(-1, live.size)
        rows_per_image = NUM_CELLS
    pooled = auroc_matrix(scores, labels)  # [C, n_live]
    table = pooled.copy()
    contexts = np.full(live.size, ALL_SCENES, dtype=object)
    if context == "background":
        backgrounds = np.array([scene.background for _, scene in samples])
        mass = image_max[:, live]  # [n, n_live]
        total = np.maximum(mass.sum(axis=0), 1e-12)
        for background in np.unique(backgrounds):
            in_background = backgrounds == background
            specific = mass[in_background].sum(axis=0) / total >= CONTEXT_SHARE  # [n_live]
            if not specific.any():
                continue
            rows_mask = np.repeat(in_background, rows_per_image)
            within = auroc_matrix(scores[rows_mask][:, specific], labels[rows_mask])
            table[:, specific] = within
            contexts[specific] = background
    n_positive = labels.sum(axis=0)
    rows = [
        {
            "feature": int(feature),
            "concept": concept,
            "category": CONCEPT_CATEGORY[concept],
            "auroc": float(table[c, j]),
            "pooled_auroc": float(pooled[c, j]),
            "context": contexts[j],
            "n_positive": int(n_positive[c]),
            "fire_rate": float(fire_rate[feature]),
        }
        for j, feature in enumerate(live)
        for c, concept in enumerate(CONCEPTS)
    ]
    return pd.DataFrame(rows, columns=CONCEPT_COLUMNS)


def summarize_feature_concepts(concepts: pd.DataFrame, clear_threshold: float = 0.9) -> pd.DataFrame:
    """Per feature: its best concept overall and its best object (non-background) concept.

    Args:
        concepts: Output of :func:`feature_concepts`.
        clear_threshold: A feature is ``clear`` when its best non-background AUROC reaches this.

    Returns:
        One row per feature: ``feature, best_concept, best_auroc, best_category,
        best_object_concept, best_object_auroc, best_object_category, clear, best_is_background,
        fire_rate``, and when ``concepts`` has them, ``context`` and ``best_object_pooled_auroc``
        (the best object concept's AUROC over all scenes).
    """
    has_context = "context" in concepts.columns and "pooled_auroc" in concepts.columns
    rows = []
    for feature, group in concepts.dropna(subset=["auroc"]).groupby("feature", sort=True):
        best = group.loc[group["auroc"].idxmax()]
        objects = group[group["category"] != "background"]
        best_object = objects.loc[objects["auroc"].idxmax()] if len(objects) else None
        object_auroc = float(best_object["auroc"]) if best_object is not None else float("nan")
        row = {}
        if has_context:
            row = {
                "context": group["context"].iloc[0],
                "best_object_pooled_auroc": (
                    float(best_object["pooled_auroc"]) if best_object is not None else float("nan")
                ),
            }
        rows.append(
            {
                "feature": int(feature),
                "best_concept": best["concept"],
                "best_auroc": float(best["auroc"]),
                "best_category": best["category"],
                "best_object_concept": best_object["concept"] if best_object is not None else None,
                "best_object_auroc": object_auroc,
                "best_object_category": best_object["category"] if best_object is not None else None,
                "clear": bool(object_auroc >= clear_threshold),
                "best_is_background": best["category"] == "background",
                "fire_rate": float(group["fire_rate"].iloc[0]),
                **row,
            }
        )
    return pd.DataFrame(rows)


def explanation_is_correct(explanation: str, concept: str) -> bool:
    """Whether an explanation names a toy-world concept (synonyms and plurals count).

    An explanation naming several concepts is correct if any of them is ``concept``.
    """
    if concept not in CONCEPT_CATEGORY:
        raise ValueError(f"Unknown toy-world concept {concept!r}; expected one of {CONCEPTS}.")
    if not isinstance(explanation, str):
        return False
    return concept in concepts_in_text(explanation)


def build_toy_ground_truth(
    model: Any, sae: Any, *, n_images: int = 2000, seed: int = 303, progress: bool = False
) -> GroundTruth:
    """The toy world's ground truth for an SAE of the toy model, from ``n_images`` fresh scenes
    (:func:`feature_concepts`, summarised). The builder the toy plug-in registers."""
    concepts = feature_concepts(model, sae, n_images=n_images, seed=seed, progress=progress)
    return toy_ground_truth(summarize_feature_concepts(concepts))


def toy_ground_truth(concepts: pd.DataFrame) -> GroundTruth:
    """The toy world's ground truth as a :class:`~vis_steer_lens.evaluate.GroundTruth`.

    Args:
        concepts: :func:`feature_concepts` output, or its :func:`summarize_feature_concepts` summary
            (also as read back from a run folder's ``feature_concepts.csv``).

    Returns:
        A ground truth whose target per feature is its best object concept (its best concept of
        any category where it has none), clear where that concept's AUROC reaches 0.9.
    """
    summary = concepts if "best_object_concept" in concepts.columns else summarize_feature_concepts(concepts)
    fallback = summary["best_concept"] if "best_concept" in summary else [None] * len(summary)
    targets = [
        obj if isinstance(obj, str) else best if isinstance(best, str) else None
        for obj, best in zip(summary["best_object_concept"], fallback, strict=True)
    ]
    table = summary.assign(feature=summary["feature"].astype(int), concept=targets)
    return GroundTruth(name="toy", table=table, is_correct=explanation_is_correct)


__all__ = [
    "CONCEPTS",
    "build_toy_ground_truth",
    "CONCEPT_COLUMNS",
    "explanation_is_correct",
    "feature_concepts",
    "summarize_feature_concepts",
    "toy_ground_truth",
]
