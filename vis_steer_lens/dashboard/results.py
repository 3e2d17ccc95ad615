"""Reading a run folder for the dashboards.

A run folder (:class:`~vis_steer_lens.RunFolder`) holds ``mined/`` (required here:
:class:`~vis_steer_lens.mining.MinedActivations`) and, when present, every method's explanations
and scores, the ground truth and the coefficient sweep. Both exporters read it through
:class:`DashboardResults`, so they agree on which features exist and which explanation belongs
to which method.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vis_steer_lens.mining import TOP_FILE, MinedActivations
from vis_steer_lens.runs import RunFolder, with_method_labels

MINED_DIR = "mined"
EXPLANATIONS_FILE = "explanations.parquet"
SCORES_FILE = "scores.csv"
CONCEPTS_FILE = "feature_concepts.csv"
SWEEP_FILE = "coefficient_sweep.csv"


def _clean(value: Any) -> Any:
    """A JSON-safe Python value: NaN/inf become ``None``, numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_optional_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


@dataclass(eq=False)
class DashboardResults:
    """The parts of a results folder the dashboards show.

    Attributes:
        root: The results folder.
        mined: Mined top images and statistics (``root/mined``), or ``None`` before ``mine``.
        explanations: One row per (method, direction, feature), or ``None``.
        scores: Per-explanation AUROCs (``scores.csv``), or ``None``.
        concepts: Toy-world ground truth per feature (``feature_concepts.csv``), or ``None``.
        sweep: The steering coefficient sweep (``coefficient_sweep.csv``), or ``None``.
        comparison: The run's per-method table (``comparison.csv`` from ``compare``), or ``None``.
        margins: The run's paired margins (``margins.csv`` from ``compare``), or ``None``.
        sweep_sample: The features the coefficient sweep explained, in the order of the sweep's
            ``explanations`` lists (from ``calibration/coefficient.json``), or ``None``.
    """

    root: Path
    mined: MinedActivations | None
    explanations: pd.DataFrame | None
    scores: pd.DataFrame | None
    concepts: pd.DataFrame | None
    sweep: pd.DataFrame | None
    comparison: pd.DataFrame | None = None
    margins: pd.DataFrame | None = None
    sweep_sample: list[int] | None = None

    @classmethod
    def load(cls, results_dir: str | Path) -> DashboardResults:
        """Open a run folder (:class:`~vis_steer_lens.RunFolder`): every method's explanations and
        scores that are there, beside the mined top images.

        Folders written before run folders existed (``explanations.parquet`` and ``scores.csv``
        at the top) are read too.

        Raises:
            FileNotFoundError: The folder, or its ``mined/`` results, is missing.
        """
        root = Path(results_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"Run folder {str(root)!r} does not exist.")
        run = RunFolder(root)
        mined = run.mined() if run.has_mined() else None  # a run with explanations only shows those
        explanations = run.explanations()
        if explanations is None and (root / EXPLANATIONS_FILE).is_file():
            explanations = with_method_labels(pd.read_parquet(root / EXPLANATIONS_FILE))
        scored = run.scored()  # each method against the reference set it was scored with
        if scored is not None:
            scores = scored[0]
        else:
            scores = _read_optional_csv(root / SCORES_FILE)
            scores = with_method_labels(scores) if scores is not None else None
        sweep = run.sweep()
        if mined is None and explanations is None and scores is None:
            raise FileNotFoundError(
                f"{str(root)!r} holds nothing to show yet: no mined activations ({MINED_DIR}/{TOP_FILE}), no "
                f"explanations, no scores. Run `vis-steer-lens mine --run {root}` or `vis-steer-lens explain "
                f"--run {root}` first."
            )
        choice = run.coefficient() if sweep is not None else None
        return cls(
            root=root,
            mined=mined,
            explanations=explanations,
            scores=scores,
            concepts=run.concepts(),
            sweep=sweep if sweep is not None else _read_optional_csv(root / SWEEP_FILE),
            comparison=_read_optional_csv(run.comparison_path),
            margins=_read_optional_csv(run.margins_path),
            sweep_sample=[int(f) for f in choice.sample] if choice is not None and choice.sample else None,
        )

    # -- per feature --------------------------------------------------------------------------------

    @property
    def features(self) -> list[int]:
        """Every mined feature id, in mining order; without mining, every explained or scored one."""
        if self.mined is not None:
            return self.mined.feature_ids.tolist()
        ids = set()
        for frame in (self.explanations, self.scores):
            if frame is not None:
                ids.update(int(f) for f in frame["feature"])
        return sorted(ids)

    @property
    def sae_id(self) -> str | None:
        """The SAE's identity: the mined one's, else the explanations' or the run's record."""
        if self.mined is not None:
            return self.mined.sae_id
        for frame in (self.explanations, self.scores):
            if frame is not None and "sae_id" in frame and len(frame):
                return str(frame["sae_id"].iloc[0])
        owner = RunFolder(self.root).owner()
        return owner.get("sae_id") if owner else None

    @property
    def method_labels(self) -> list[str]:
        """Explanation methods present, in first-seen order."""
        if self.explanations is None:
            return []
        return list(dict.fromkeys(self.explanations["method_label"]))

    @property
    def control_labels(self) -> list[str]:
        """Method labels of the controls (explanations of a direction other than the SAE's)."""
        if self.explanations is None or "direction" not in self.explanations:
            return []
        frame = self.explanations[["method_label", "direction"]].drop_duplicates("method_label")
        return [
            label for label, d in zip(frame["method_label"], frame["direction"], strict=True) if d != "sae"
        ]

    def explanation_records(self, exclude_flagged: bool = False) -> dict[int, list[dict[str, Any]]]:
        """Per feature, its explanations (one dict per method) with their scores merged in.

        Args:
            exclude_flagged: Leave out answers flagged as repetitions, unfinished or empty.
        """
        if self.explanations is None:
            return {}
        frame = self.explanations
        if exclude_flagged and "flag" in frame:
            frame = frame[~frame["flag"].isin(("repetition", "unfinished", "empty"))]
        if self.scores is not None:
            keys = ["feature", "method_label"]
            score_cols = [
                c for c in ("auroc_mean", "auroc_max", "evidence", "positives_max") if c in self.scores
            ]
            frame = frame.merge(
                self.scores[keys + score_cols].drop_duplicates(keys), on=keys, how="left", validate="m:1"
            )
        wanted = [
            "method",
            "direction",
            "method_label",
            "explanation",
            "flag",
            "raw_generation",
            "coefficient",
            "prompt_id",
            "model_name",
            "image_ids",
            "auroc_mean",
            "auroc_max",
            "evidence",
            "positives_max",
        ]
        columns = [c for c in wanted if c in frame]
        out: dict[int, list[dict[str, Any]]] = {}
        for feature, record in zip(frame["feature"].tolist(), frame[columns].to_dict("records"), strict=True):
            record = {key: _clean(value) for key, value in record.items()}
            ids = record.get("image_ids")
            if isinstance(ids, str):  # the demo stores image ids as JSON text
                record["image_ids"] = json.loads(ids)
            elif ids is not None and not isinstance(ids, list):
                record["image_ids"] = [int(i) for i in ids]
            out.setdefault(int(feature), []).append(record)
        return out

    def concept_records(self) -> dict[int, dict[str, Any]]:
        """Per feature, its ground-truth concept row (toy world only)."""
        if self.concepts is None:
            return {}
        return {
            int(row["feature"]): {k: _clean(v) for k, v in row.items()}
            for row in self.concepts.to_dict("records")
        }

    def top_images(self, feature: int) -> list[tuple[int, float, torch.Tensor]]:
        """The feature's kept images that it actually fired on, best first (none without mining)."""
        if self.mined is None:
            return []
        return [(i, s, amap) for i, s, amap in self.mined.top_images(feature) if s > 0]

    def image(self, image_id: int) -> Image.Image:
        """Source image ``image_id`` as an RGB PIL image (pixel tensors are min-max scaled)."""
        item = self.mined.image(image_id)
        if isinstance(item, Image.Image):
            return item.convert("RGB")
        array = item.detach().float().cpu() if isinstance(item, torch.Tensor) else torch.as_tensor(item)
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.permute(1, 2, 0)
        array = array - array.min()
        array = (array / array.max().clamp(min=1e-8) * 255).round().to(torch.uint8).numpy()
        if array.shape[-1] == 1:
            array = array[..., 0]
        return Image.fromarray(array).convert("RGB")


#: Words that carry no concept; left out when comparing two explanations.
STOP_WORDS = frozenset(
    """a an the this that these those it its is are was be of in on at to for with and or as by from
    image images picture element highlighted shown shows showing some something thing things object
    objects pattern patterns visual one two there here which what very""".split()
)


def content_words(text: str | None) -> frozenset[str]:
    """The words of an explanation that name something: lower-cased, letters only, longer than two
    letters, not in :data:`STOP_WORDS`, with a plural ``s`` dropped (``"circles"`` -> ``"circle"``)."""
    if not isinstance(text, str):
        return frozenset()
    words = set()
    for word in "".join(c if c.isalpha() else " " for c in text.lower()).split():
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if len(word) > 2 and word not in STOP_WORDS:
            words.add(word)
    return frozenset(words)


def method_agreement(texts: list[str | None]) -> float | None:
    """Whether several methods' explanations of one feature name the same thing, from 0 to 1.

    The mean, over every pair of explanations, of the Jaccard overlap of their
    :func:`content_words` (shared words over all words of the pair). 1: every method names the
    same words; 0: no two share one. Explanations with no content word are left out; ``None``
    when fewer than two remain. A lexical measure: synonyms ("crimson", "red") count as different.

    Args:
        texts: One explanation per method (``None`` for a method without one).
    """
    sets = [words for words in map(content_words, texts) if words]
    if len(sets) < 2:
        return None
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
    return sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs)


def patch_labels(grid_size: int, cols: int | None = None) -> list[str]:
    """Labels ``p(row,col)`` of the patches in row-major order (the order of a flattened map)."""
    return [f"p({r},{c})" for r in range(grid_size) for c in range(grid_size if cols is None else cols)]


__all__ = ["STOP_WORDS", "DashboardResults", "content_words", "method_agreement", "patch_labels"]
