"""AUROC from generation: do images drawn from an explanation make its feature fire?

For each explanation a generator draws ``n_images`` images (the positives); the feature's activation
per image (mean over patches, and max over patches) on them is compared with its activation on a fixed
set of reference images (the negatives). The reference images are encoded once per scorer and their
``[n_ref, d_sae]`` mean / max activations cached, so every feature reuses them.

The per-feature AUROC uses all reference images as that feature's negatives. The global AUROC pools
every feature's positives against every feature's negatives (see ``metrics.global_auroc``); by default
each feature contributes all reference images, which estimates the same quantity as the authors'
protocol (``len(positives)`` random images per feature) with less noise; pass
``negatives_per_feature=3`` to ``summary`` for their sampling exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from vis_steer_lens.activations import iter_images
from vis_steer_lens.evaluate.encoding import FeatureEncoder, make_encoder, pooled_activations
from vis_steer_lens.evaluate.generators import ImageGenerator
from vis_steer_lens.evaluate.metrics import auroc, bootstrap_mean_ci, global_auroc, method_label
from vis_steer_lens.saes.metadata import sae_identity
from vis_steer_lens.saes.validation import SAEModelMismatchError, check_feature_ids
from vis_steer_lens.store import ResultsStore, ResumeMismatchError

KEY_COLUMNS = ("sae_id", "feature", "method", "direction", "explanation_hash")
#: Longest side, in pixels, of each evidence image a scorer keeps (``evidence_dir``).
EVIDENCE_SIZE = 128


class ScoresFileMismatchError(ResumeMismatchError):
    """A scores file written with other generation settings (generator, n_images, seed)."""


def feature_seed(seed: int, feature: int) -> int:
    """Seed of one feature's images, derived from the run seed and the feature id.

    All methods explaining the same feature share it, so their images differ only through the text.
    """
    digest = hashlib.sha256(f"{int(seed)}:{int(feature)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def explanation_hash(explanation: str) -> str:
    """Short stable hash of an explanation text (part of the resume key)."""
    return hashlib.sha1(explanation.encode("utf-8")).hexdigest()[:16]


def _evidence_tile(image: Any) -> Image.Image:
    """A generated image (PIL or ``[channels, H, W]`` in ``[0, 1]``) as RGB, at most :data:`EVIDENCE_SIZE` px."""
    if isinstance(image, torch.Tensor):
        array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        image = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
    image = image.convert("RGB")
    image.thumbnail((EVIDENCE_SIZE, EVIDENCE_SIZE))
    return image


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _normalise_explanations(explanations: pd.DataFrame, default_sae_id: str) -> pd.DataFrame:
    missing = {"feature", "explanation"} - set(explanations.columns)
    if missing:
        raise ValueError(
            f"The explanations DataFrame lacks column(s) {sorted(missing)}; expected at least 'feature' and "
            f"'explanation' (and usually 'sae_id', 'method', 'direction'). Got {list(explanations.columns)}."
        )
    df = explanations.reset_index(drop=True).copy()
    defaults = {"sae_id": default_sae_id, "method": "unknown", "direction": "sae"}
    for column, default in defaults.items():
        if column not in df.columns:
            df[column] = default
        df[column] = [default if _text(v) == "" else str(v) for v in df[column]]
    df["feature"] = df["feature"].astype(int)
    df["explanation"] = [_text(v) for v in df["explanation"]]
    df["explanation_hash"] = [explanation_hash(text) for text in df["explanation"]]
    return df


def _key(row: dict[str, Any] | pd.Series) -> tuple:
    return tuple(int(row[c]) if c == "feature" else str(row[c]) for c in KEY_COLUMNS)


def resume_scoring(
    df: pd.DataFrame,
    score_chunk: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    *,
    settings: dict[str, Any],
    error: type[ResumeMismatchError],
    chunk_size: int,
    out_path: str | Path | None = None,
    progress: bool = True,
    desc: str = "scoring",
    settings_in_rows: bool = False,
) -> list[dict[str, Any]]:
    """Score each row of ``df`` once, resuming from ``out_path``: what every per-explanation scorer shares.

    Rows already in the file (by :data:`KEY_COLUMNS`) are not scored again; the others are scored
    ``chunk_size`` at a time and appended as they come.

    Args:
        df: Normalised explanations (:func:`_normalise_explanations`).
        score_chunk: ``rows -> scored rows``; each scored row keeps the row's key columns.
        settings: The scorer's settings, stored beside ``out_path`` (others are refused with ``error``).
        error: The error type for a file written with other settings.
        chunk_size: Rows per ``score_chunk`` call.
        out_path: A ``.jsonl`` file, or ``None``.
        progress: Show a progress bar labelled ``desc``.
        settings_in_rows: Also write ``settings`` into each scored row.

    Returns:
        One scored row per row of ``df``, in its order, with the row's own ``sae_id``, ``method``,
        ``direction`` and ``explanation``.
    """
    store = None
    if out_path is not None:
        store = ResultsStore(out_path, settings, key=KEY_COLUMNS, error=error)
    done: dict[tuple, dict[str, Any]] = dict(store.rows) if store is not None else {}
    todo: dict[tuple, dict[str, Any]] = {}
    for row in df.to_dict("records"):
        key = _key(row)
        if key not in done and key not in todo:
            todo[key] = row
    pending = list(todo.values())
    chunk_size = max(1, chunk_size)
    bar = tqdm(total=len(pending), desc=desc, disable=not progress)
    try:
        for start in range(0, len(pending), chunk_size):
            chunk = score_chunk(pending[start : start + chunk_size])
            if settings_in_rows:
                chunk = [{**r, **settings} for r in chunk]
            if store is not None:
                store.append(chunk)
            done.update({_key(r): r for r in chunk})
            bar.update(len(chunk))
    finally:
        bar.close()
        if store is not None:
            store.close()
    out = []
    for row in df.to_dict("records"):
        scored = dict(done[_key(row)])
        scored.update({c: row[c] for c in ("sae_id", "method", "direction", "explanation")})
        out.append(scored)
    return out


class GenerationAUROCScorer:
    """Score explanations by how well images generated from them activate their features.

    Args:
        model: A HookedViT or HookedVLM (None when ``encoder`` is given).
        sae: The ``sae_lens.SAE`` whose features were explained (None when ``encoder`` is given).
        generator: An :class:`~vis_steer_lens.evaluate.ImageGenerator` (``ToyGenerator``,
            ``DiffusersGenerator``, ...).
        reference_images: The negatives: PIL images or ``[channels, H, W]`` tensors (a list, a
            folder, a ``datasets.Dataset`` or any iterable), e.g. random ImageNet test images.
        n_images: Images generated per explanation (paper: 3).
        batch_size: Images per forward pass of the vision tower.
        seed: Run seed; feature ``f``'s images use ``feature_seed(seed, f)``.
        processor: Image processor for PIL images; the model's own when None.
        encoder: Instead of ``model`` and ``sae``: a callable ``images -> [n, patches, d_sae]``.
        reference_key: The reference set's settings (:func:`vis_steer_lens.runs.reference_key`),
            recorded in every row (``reference``) so a run folder reads each method's scores against
            its own negatives; ``None`` records nothing.
        evidence_dir: A folder to keep the scorer's evidence in: the first ``evidence_images``
            images drawn for each explanation, side by side in one PNG per scored row (each at most
            :data:`EVIDENCE_SIZE` px), named in the row's ``evidence`` field (``{"file", "images"}``);
            their activations are the row's first ``positives_max`` values. ``None`` keeps none.
        evidence_images: Images kept per row in ``evidence_dir`` (default 3).
    """

    def __init__(
        self,
        model: Any,
        sae: Any,
        generator: ImageGenerator,
        reference_images: Iterable[Any],
        n_images: int = 3,
        batch_size: int = 16,
        seed: int = 0,
        processor: Any = None,
        encoder: FeatureEncoder | None = None,
        reference_key: str | None = None,
        evidence_dir: str | Path | None = None,
        evidence_images: int = 3,
    ) -> None:
        if n_images < 1:
            raise ValueError(f"n_images must be at least 1, got {n_images}.")
        self.sae = sae
        self.encoder = make_encoder(model, sae, encoder, processor)
        self.generator = generator
        self.reference_images = reference_images
        self.n_images = n_images
        self.batch_size = batch_size
        self.seed = seed
        self.reference_key = reference_key
        self.evidence_dir = None if evidence_dir is None else Path(evidence_dir)
        self.evidence_images = max(0, min(int(evidence_images), n_images))
        self._reference: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def generator_name(self) -> str:
        return str(getattr(self.generator, "name", type(self.generator).__name__))

    def reference_activations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and max over patches of every feature on the reference images, computed once.

        Returns:
            ``(mean, max)``, each ``[n_ref, d_sae]``.
        """
        if self._reference is None:
            images = list(iter_images(self.reference_images))
            if not images:
                raise ValueError("reference_images is empty; the negatives need at least one image.")
            self._reference = pooled_activations(self.encoder, images, self.batch_size)
            self.reference_images = images  # an iterator cannot be read twice
        return self._reference

    def generated_images(self, explanation: str, feature: int) -> list[Any]:
        """The images the scorer draws for one (explanation, feature), deterministic under the seed."""
        return self.generator(explanation, self.n_images, feature_seed(self.seed, feature))

    def _settings(self) -> dict[str, Any]:
        settings = {"generator": self.generator_name, "n_images": self.n_images, "seed": self.seed}
        if self.reference_key is not None:  # the negatives' settings, so one file holds one reference set
            settings["reference"] = self.reference_key
        return settings

    def _score_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Generate and encode the images of several explanations in shared batches."""
        images: list[Any] = []
        for row in rows:
            drawn = self.generated_images(row["explanation"], row["feature"])
            if len(drawn) != self.n_images:
                raise ValueError(f"The generator returned {len(drawn)} images, expected {self.n_images}.")
            images.extend(drawn)
        means, maxes = pooled_activations(self.encoder, images, self.batch_size)  # [rows * n, d_sae]
        scored = []
        for i, row in enumerate(rows):
            block = slice(i * self.n_images, (i + 1) * self.n_images)
            record = {
                **{c: row[c] for c in KEY_COLUMNS},
                "explanation": row["explanation"],
                "positives_mean": means[block, row["feature"]].tolist(),
                "positives_max": maxes[block, row["feature"]].tolist(),
                **self._settings(),
            }
            if self.evidence_dir is not None and self.evidence_images:
                record["evidence"] = self._keep_evidence(row, images[block][: self.evidence_images])
            scored.append(record)
        return scored

    def _keep_evidence(self, row: dict[str, Any], images: list[Any]) -> dict[str, Any]:
        """Write one row's evidence images side by side into ``evidence_dir``.

        Returns:
            ``{"file": name in evidence_dir, "images": how many, left to right}``; they are the
            row's first ``positives_max`` / ``positives_mean`` entries.

        The name follows from the row's key, so a resumed scoring rewrites the same file.
        """
        from vis_steer_lens.atomic import atomic_path

        tiles = [_evidence_tile(image) for image in images]
        strip = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        x = 0
        for tile in tiles:
            strip.paste(tile, (x, 0))
            x += tile.width
        name = f"{int(row['feature'])}-{row['method']}-{row['direction']}-{row['explanation_hash']}.png"
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.evidence_dir / name, sync=False) as tmp:
            strip.save(tmp, format="PNG")
        return {"file": name, "images": len(tiles)}

    def score(
        self,
        explanations: pd.DataFrame,
        progress: bool = True,
        out_path: str | Path | None = None,
        desc: str | None = None,
    ) -> pd.DataFrame:
        """Score every explanation row, except those of features that never fired.

        Args:
            explanations: Columns ``feature`` and ``explanation``, usually also ``sae_id``, ``method``
                and ``direction`` (defaults: the SAE's id, ``"unknown"``, ``"sae"``). Rows flagged
                ``"dead"`` (a feature that never fired: no explanation) are left out: they would
                score 0.5 whatever the method and pull every mean towards it.
            progress: Show a progress bar.
            out_path: A ``.jsonl`` file; finished rows are appended (and synced) as they are scored,
                and rows already in it (same sae_id, feature, method, direction and explanation text)
                are not scored again.

        Returns:
            One row per input row, in input order: ``sae_id, feature, method, direction,
            method_label, explanation, auroc_mean, auroc_max, positives_mean, positives_max`` (the
            per-image activations, lists of ``n_images``), ``n_negatives``.
            desc: The progress bar's label (default: ``"generation AUROC"``).
        """
        if "flag" in explanations:
            explanations = explanations[explanations["flag"].astype(object) != "dead"]
        sae_id = ""
        if self.sae is not None:
            sae_id = str(getattr(self.sae.cfg.metadata, "sae_id", None) or "")
        df = _normalise_explanations(explanations, sae_id)
        if self.sae is not None:
            ours = sae_identity(self.sae)
            # Rows that name a full SAE identity must name this SAE: another's features mean other things.
            foreign = sorted({i for i in df["sae_id"] if "/d" in i and i != ours})
            if foreign:
                raise SAEModelMismatchError(
                    f"The explanations are of SAE {foreign[0]}, but the scorer measures SAE {ours}. Score them "
                    "with the SAE they explain (the same --sae as explain)."
                )
        ref_mean, ref_max = self.reference_activations()
        d_sae = ref_mean.shape[1]
        check_feature_ids(d_sae, df["feature"].tolist())

        stored = resume_scoring(
            df,
            self._score_rows,
            settings=self._settings(),
            error=ScoresFileMismatchError,
            chunk_size=max(1, self.batch_size // self.n_images),
            out_path=out_path,
            progress=progress,
            desc=desc or "generation AUROC",
        )
        return scores_from_rows(stored, ref_mean, ref_max)

    def summary(
        self,
        scores: pd.DataFrame,
        negatives_per_feature: int | None = None,
        n_boot: int = 1000,
        level: float = 0.95,
    ) -> pd.DataFrame:
        """Per method label: per-feature mean AUROC with a bootstrap CI, and the global AUROC.

        See :func:`summarize_scores` (called with this scorer's reference activations and seed).
        """
        ref_mean, ref_max = self.reference_activations()
        return summarize_scores(
            scores,
            ref_mean,
            ref_max,
            seed=self.seed,
            negatives_per_feature=negatives_per_feature,
            n_boot=n_boot,
            level=level,
        )


def scores_from_rows(
    rows: Iterable[dict[str, Any]], reference_mean: torch.Tensor, reference_max: torch.Tensor
) -> pd.DataFrame:
    """Scored rows (stored positives) with their AUROCs against the reference images.

    AUROCs are computed from the stored positives, so stored rows always agree with the
    reference set they are read against (a resumed file, a run folder read without a model).

    Args:
        rows: Dicts with ``feature``, ``method``, ``direction``, ``explanation``, ``positives_mean``
            and ``positives_max`` (and usually ``sae_id``), as :meth:`GenerationAUROCScorer.score` stores.
        reference_mean: The negatives' mean-pooled activations ``[n_ref, d_sae]``.
        reference_max: The negatives' max-pooled activations ``[n_ref, d_sae]``.

    Returns:
        One row per input row: ``sae_id, feature, method, direction, method_label, is_control,
        explanation, auroc_mean, auroc_max, positives_mean, positives_max, n_negatives, evidence``
        (``{"file", "images"}`` in the run's evidence folder, ``None`` when the scorer kept none).
    """
    out = []
    for row in rows:
        feature = int(row["feature"])
        neg_mean, neg_max = reference_mean[:, feature].numpy(), reference_max[:, feature].numpy()
        out.append(
            {
                "sae_id": row.get("sae_id", ""),
                "feature": feature,
                "method": row["method"],
                "direction": row["direction"],
                "method_label": method_label(row["method"], row["direction"]),
                "is_control": str(row["direction"]) != "sae",
                "explanation": row["explanation"],
                "auroc_mean": auroc(row["positives_mean"], neg_mean),
                "auroc_max": auroc(row["positives_max"], neg_max),
                "positives_mean": list(row["positives_mean"]),
                "positives_max": list(row["positives_max"]),
                "n_negatives": int(neg_mean.shape[0]),
                "evidence": row.get("evidence"),
            }
        )
    columns = [
        "sae_id",
        "feature",
        "method",
        "direction",
        "method_label",
        "is_control",
        "explanation",
        "auroc_mean",
        "auroc_max",
        "positives_mean",
        "positives_max",
        "n_negatives",
        "evidence",
    ]
    return pd.DataFrame(out, columns=columns)


def summarize_scores(
    scores: pd.DataFrame,
    reference_mean: torch.Tensor,
    reference_max: torch.Tensor,
    *,
    seed: int = 0,
    negatives_per_feature: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per method label: per-feature mean AUROC with a bootstrap CI, and the global AUROC.

    Args:
        scores: Output of :meth:`GenerationAUROCScorer.score` (or the rows a run folder holds).
        reference_mean: The negatives' mean-pooled activations ``[n_ref, d_sae]``, or a dict of
            ``(mean, max)`` per reference key when ``scores`` has a ``reference_key`` column (a run
            whose methods were scored against different reference sets; ``reference_max`` unused).
        reference_max: The negatives' max-pooled activations ``[n_ref, d_sae]``.
        seed: The scorer's seed (bootstrap, and the negatives drawn per feature).
        negatives_per_feature: Negatives each feature adds to the global pool: all reference
            images when None, else that many drawn per feature (seeded by the feature, as the
            authors drew ``len(positives)`` random images with the feature id as seed).
        n_boot: Bootstrap resamples of the CI.
        level: CI coverage.

    Returns:
        One row per method label: ``method_label, n_features, auroc_mean, auroc_mean_lo,
        auroc_mean_hi, auroc_max, auroc_max_lo, auroc_max_hi, global_auroc_mean, global_auroc_max``.
    """
    references = reference_mean if isinstance(reference_mean, dict) else None
    rows = []
    for label, group in scores.groupby("method_label", sort=False):
        if references is not None:  # each method against the reference set it was scored with
            key = group["reference_key"].iloc[0]
            reference_mean, reference_max = references[None if pd.isna(key) else key]
        n_ref = reference_mean.shape[0]
        row: dict[str, Any] = {"method_label": label, "n_features": int(group["feature"].nunique())}
        for variant, ref in (("mean", reference_mean), ("max", reference_max)):
            mean, lo, hi = bootstrap_mean_ci(group[f"auroc_{variant}"], n_boot=n_boot, seed=seed, level=level)
            row.update({f"auroc_{variant}": mean, f"auroc_{variant}_lo": lo, f"auroc_{variant}_hi": hi})
            positives = [np.asarray(p, dtype=np.float64) for p in group[f"positives_{variant}"]]
            negatives = []
            for feature in group["feature"]:
                column = ref[:, int(feature)].numpy()
                if negatives_per_feature is not None:
                    rng = np.random.default_rng(feature_seed(seed, int(feature)))
                    take = rng.choice(n_ref, size=min(negatives_per_feature, n_ref), replace=False)
                    column = column[take]
                negatives.append(column)
            row[f"global_auroc_{variant}"] = global_auroc(positives, negatives)
        rows.append(row)
    return pd.DataFrame(rows)


def score_generation_auroc(
    model: Any,
    sae: Any,
    generator: ImageGenerator,
    reference_images: Sequence[Any],
    explanations: pd.DataFrame,
    **kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One-call form: ``(scores, summary)`` of :class:`GenerationAUROCScorer`."""
    score_kwargs = {k: kwargs.pop(k) for k in ("progress", "out_path") if k in kwargs}
    scorer = GenerationAUROCScorer(model, sae, generator, reference_images, **kwargs)
    scores = scorer.score(explanations, **score_kwargs)
    return scores, scorer.summary(scores)
