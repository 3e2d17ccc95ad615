"""One run folder: every file of a run named in one place, for every command to read and write.

A run explains the features of one SAE by any number of methods and controls, scores the
explanations, compares them and shows them in a dashboard. Any subset of those steps may have
run; every reader shows what is there::

    RUN/
      mined/                                   top images and statistics (``mine``)
      explanations/<name>.jsonl                one row per feature, resumable (``explain``)
      explanations/<name>.parquet              the same rows, exported when a run finishes
      calibration/coefficient.json             the run's one steering coefficient and how it was chosen
      calibration/coefficient-sweep.csv, .html the sweep that chose it (with ``--coefficient auto``)
      scores/<name>.<scorer>.jsonl             one row per scored explanation, resumable (``evaluate``)
      scores/reference.<scorer>.<key>.safetensors  the scorer's negatives per setting (``<key>``:
                                               :func:`reference_key`), for tables without a model
      scores/evidence/<feature>-<name>-<hash>.png  images generated from an explanation, side by side
                                               (the scorer's evidence, shown on the feature page)
      run.json                                 the SAE and model the run belongs to (:meth:`RunFolder.claim`)
      feature_concepts.csv                     ground truth per feature (toy world)
      comparison.csv, margins.csv, comparison.html   the comparison (``compare``)
      scorer_agreement.csv                     Spearman correlation between scorers (``compare``)
      sweeps/<axis>.csv, <axis>.html           ablations along one axis (``sweep``)
      dashboard/, neuronpedia/                 exports (``dashboard``)
      activations/                             cached vision activations, sharded (``cache``)
      saes/<architecture>-w<width>-k<k>/       SAELens folders of a trained grid (``train``)

``<name>`` is the method, with the control direction appended for controls
(``steering``, ``topk``, ``hybrid``, ``steering-permuted``, ``ground-truth``; see :func:`run_name`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vis_steer_lens.atomic import atomic_path, atomic_write_text
from vis_steer_lens.explain.labels import method_label
from vis_steer_lens.jsonl import read_jsonl

#: The scorer whose files :meth:`RunFolder.scores` reads by default.
DEFAULT_SCORER = "generation_auroc"


# Readers list methods in this order (then any others by name, the ground truth last).
_NAME_ORDER = ("steering", "topk", "hybrid", "steering-random_norm_matched", "steering-permuted")


def _name_key(name: str) -> tuple[int, str]:
    if name in _NAME_ORDER:
        return _NAME_ORDER.index(name), name
    return (len(_NAME_ORDER) + (1 if name == "ground-truth" else 0), name)


class RunFolderError(FileNotFoundError):
    """A run folder that lacks what a command needs; the message says which step writes it."""


class RunOwnerError(ValueError):
    """A run folder made with one SAE or model, used with another."""


#: What to do about a damaged reference file.
_REFERENCE_FIX = "delete it and run `vis-steer-lens evaluate` on the run again to recompute it"


def run_name(method: str, direction: str = "sae") -> str:
    """The file stem of a method's explanations: ``"steering"``, ``"steering-permuted"``, ...

    Args:
        method: ``"steering"``, ``"topk"``, ``"hybrid"``, ``"ground truth"``, ...
        direction: ``"sae"`` for the method itself, else the control's direction.
    """
    stem = method.replace(" ", "-")
    return stem if direction in ("sae", "", None) else f"{stem}-{direction}"


class RunFolder:
    """The files of one run (see the module docstring for the layout).

    Args:
        root: The run folder. It need not exist yet; writers create what they write.

    Example:
        >>> run = RunFolder("runs/g3-l16")  # doctest: +SKIP
        >>> run.explanations()              # every method's rows, or None before `explain`  # doctest: +SKIP
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise RunFolderError(f"{str(self.root)!r} is a file, not a run folder; pass a folder.")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # ------------------------------------------------------------------ names
    @property
    def mined_dir(self) -> Path:
        return self.root / "mined"

    @property
    def activations_dir(self) -> Path:
        """Cached vision activations (:mod:`vis_steer_lens.saes.cache`)."""
        return self.root / "activations"

    @property
    def saes_dir(self) -> Path:
        """SAEs trained on the run's activations (:mod:`vis_steer_lens.saes.grid`)."""
        return self.root / "saes"

    @property
    def explanations_dir(self) -> Path:
        return self.root / "explanations"

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    def explanations_path(self, name: str) -> Path:
        """The resumable ``.jsonl`` of one method's explanations."""
        return self.explanations_dir / f"{name}.jsonl"

    def explanations_export(self, name: str) -> Path:
        """The ``.parquet`` export of one method's explanations."""
        return self.explanations_dir / f"{name}.parquet"

    def sweep_path(self, name: str) -> Path:
        """Where runs written before the run's one coefficient kept a method's own sweep (read only)."""
        return self.explanations_dir / f"{name}-coefficient-sweep.csv"

    @property
    def calibration_dir(self) -> Path:
        return self.root / "calibration"

    @property
    def coefficient_path(self) -> Path:
        """The run's one steering coefficient (:class:`~vis_steer_lens.explain.calibration.CoefficientChoice`)."""
        return self.calibration_dir / "coefficient.json"

    @property
    def calibration_sweep_path(self) -> Path:
        return self.calibration_dir / "coefficient-sweep.csv"

    def scores_path(self, name: str, scorer: str = DEFAULT_SCORER) -> Path:
        """The resumable ``.jsonl`` of one method's scores by one scorer."""
        return self.scores_dir / f"{name}.{scorer}.jsonl"

    @property
    def evidence_dir(self) -> Path:
        """The generation scorer's evidence images (``GenerationAUROCScorer(evidence_dir=)``)."""
        return self.scores_dir / "evidence"

    def reference_path(self, scorer: str = DEFAULT_SCORER, key: str | None = None) -> Path:
        """The scorer's reference (negative) activations, saved beside its scores.

        Args:
            scorer: The scorer.
            key: The reference set's settings (:func:`reference_key`); ``None`` for the one
                unkeyed set of runs written before sets were keyed (and of the demo).
        """
        if key:
            return self.scores_dir / f"reference.{scorer}.{key}.safetensors"
        return self.scores_dir / f"reference.{scorer}.safetensors"

    @property
    def owner_path(self) -> Path:
        """``run.json``: the SAE and the model the run belongs to."""
        return self.root / "run.json"

    def owner(self) -> dict[str, Any] | None:
        """The SAE and model recorded by :meth:`claim` (or, for an older run, by its mining), or ``None``."""
        import json

        if self.owner_path.is_file():
            try:
                return json.loads(self.owner_path.read_text())
            except (ValueError, UnicodeDecodeError) as err:
                from vis_steer_lens.atomic import damaged

                raise damaged(
                    self.owner_path,
                    err,
                    "the run's SAE and model",
                    "restore it, or delete it if the run is yours",
                ) from err
        from vis_steer_lens.mining import META_FILE

        mined_meta = self.mined_dir / META_FILE
        if mined_meta.is_file():  # a run from before run.json: its mining says whose it is
            try:
                meta = json.loads(mined_meta.read_text())
            except (ValueError, UnicodeDecodeError):
                return None
            return {"sae_id": meta.get("sae_id"), "model_name": meta.get("model_name")}
        descriptions = (
            sorted(self.explanations_dir.glob("*.jsonl.run.json")) if self.explanations_dir.is_dir() else []
        )
        for path in descriptions:  # or its explanations
            try:
                described = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                continue
            if described.get("sae_id"):
                return {"sae_id": described["sae_id"], "model_name": described.get("model_name")}
        return None

    def claim(self, sae: Any, model: Any) -> None:
        """Record that the run belongs to ``sae`` and ``model`` (first write), or check that it does.

        A run holds one SAE's features explained and scored: another SAE's rows would be compared
        with this one's controls and negatives. A user with two SAEs makes two runs.

        Raises:
            RunOwnerError: The run was made with another SAE, or a model with another vision tower.
        """
        import json

        from vis_steer_lens.atomic import atomic_write_text
        from vis_steer_lens.saes.metadata import sae_identity

        vit = getattr(model, "vision", model)
        ours = {"sae_id": sae_identity(sae), "model_name": str(vit.cfg.model_name)}
        recorded = self.owner()
        if recorded is not None and recorded.get("sae_id") and recorded["sae_id"] != ours["sae_id"]:
            raise RunOwnerError(
                f"Run folder {str(self.root)!r} belongs to SAE {recorded['sae_id']}, but this command's SAE is "
                f"{ours['sae_id']}; a run holds one SAE. Pass the run's SAE, or another --run for this one."
            )
        tower = vit.tower_fingerprint() if hasattr(vit, "tower_fingerprint") else None
        ours["tower_fingerprint"] = tower
        if (
            recorded is not None
            and recorded.get("tower_fingerprint")
            and tower != recorded["tower_fingerprint"]
        ):
            raise RunOwnerError(
                f"Run folder {str(self.root)!r} belongs to model {recorded.get('model_name')!r} (vision tower "
                f"{recorded['tower_fingerprint']}), but this command's model is {ours['model_name']!r} (tower "
                f"{tower}); a run holds one model. Pass the run's model, or another --run."
            )
        if recorded is None or not self.owner_path.is_file() or not recorded.get("tower_fingerprint"):
            atomic_write_text(self.owner_path, json.dumps(ours, indent=2) + "\n")

    @property
    def concepts_path(self) -> Path:
        return self.root / "feature_concepts.csv"

    @property
    def comparison_path(self) -> Path:
        return self.root / "comparison.csv"

    @property
    def margins_path(self) -> Path:
        return self.root / "margins.csv"

    @property
    def agreement_path(self) -> Path:
        """``scorer_agreement.csv``: the rank correlation between scorers (``compare``)."""
        return self.root / "scorer_agreement.csv"

    @property
    def comparison_figure_path(self) -> Path:
        return self.root / "comparison.html"

    @property
    def dashboard_dir(self) -> Path:
        return self.root / "dashboard"

    @property
    def neuronpedia_dir(self) -> Path:
        return self.root / "neuronpedia"

    # ------------------------------------------------------------------ what is there
    def has_mined(self) -> bool:
        from vis_steer_lens.mining import TOP_FILE

        return (self.mined_dir / TOP_FILE).is_file()

    def mined(self):
        """The mined top activations (:class:`~vis_steer_lens.MinedActivations`).

        Raises:
            RunFolderError: If ``mine`` has not written them.
        """
        from vis_steer_lens.mining import MinedActivations

        if not self.has_mined():
            raise RunFolderError(
                f"{str(self.root)!r} has no mined activations ({self.mined_dir}); run "
                f"`vis-steer-lens mine --run {self.root}` first."
            )
        return MinedActivations.load(self.mined_dir)

    def explanation_names(self) -> list[str]:
        """Names of the methods whose explanations are in the run: the methods, the controls, the
        ground truth last."""
        if not self.explanations_dir.is_dir():
            return []
        return sorted((p.stem for p in self.explanations_dir.glob("*.jsonl")), key=_name_key)

    def score_names(self, scorer: str = DEFAULT_SCORER) -> list[str]:
        """Names of the methods scored by ``scorer``, in :meth:`explanation_names`' order."""
        if not self.scores_dir.is_dir():
            return []
        suffix = f".{scorer}.jsonl"
        return sorted((p.name[: -len(suffix)] for p in self.scores_dir.glob(f"*{suffix}")), key=_name_key)

    def explanations(self, names: list[str] | None = None) -> pd.DataFrame | None:
        """Every method's explanations, one row per (method, direction, feature), or ``None``.

        Adds ``method_label`` and ``is_control`` where the rows lack them.
        """
        frames = [_read_rows(self.explanations_path(n)) for n in (names or self.explanation_names())]
        frames = [f for f in frames if f is not None and len(f)]
        return with_method_labels(pd.concat(frames, ignore_index=True)) if frames else None

    def scores(self, scorer: str = DEFAULT_SCORER, names: list[str] | None = None) -> pd.DataFrame | None:
        """Every method's scores by ``scorer``, or ``None``."""
        frames = [_read_rows(self.scores_path(n, scorer)) for n in (names or self.score_names(scorer))]
        frames = [f for f in frames if f is not None and len(f)]
        return with_method_labels(pd.concat(frames, ignore_index=True)) if frames else None

    def concepts(self) -> pd.DataFrame | None:
        """The ground truth's table (``feature_concepts.csv``), or ``None``."""
        return (
            _read_csv(self.concepts_path, "the ground truth's table")
            if self.concepts_path.is_file()
            else None
        )

    @property
    def ground_truth_path(self) -> Path:
        return self.root / "ground_truth.json"

    def save_ground_truth(self, ground_truth: Any) -> None:
        """Keep a :class:`~vis_steer_lens.evaluate.GroundTruth`: its table and the plug-in that reopens it."""
        import json

        from vis_steer_lens.atomic import atomic_path, atomic_write_text

        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.concepts_path) as tmp:
            ground_truth.table.to_csv(tmp, index=False)
        atomic_write_text(self.ground_truth_path, json.dumps({"name": ground_truth.name}) + "\n")

    def ground_truth(self) -> Any:
        """The run's :class:`~vis_steer_lens.evaluate.GroundTruth`, reopened by its plug-in, or ``None``."""
        import json

        from vis_steer_lens.plugins import GROUND_TRUTHS

        table = self.concepts()
        if table is None or not self.ground_truth_path.is_file():
            return None
        try:
            name = json.loads(self.ground_truth_path.read_text())["name"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            from vis_steer_lens.atomic import damaged

            raise damaged(
                self.ground_truth_path,
                err,
                "the ground truth's plug-in name",
                "restore it, or delete it and the table",
            ) from err
        return GROUND_TRUTHS.get(name)(table)

    def coefficient(self):
        """The run's steering coefficient (a :class:`~vis_steer_lens.explain.calibration.CoefficientChoice`),
        or ``None`` before the first steering explain."""
        import json

        from vis_steer_lens.explain.calibration import CoefficientChoice

        if not self.coefficient_path.is_file():
            return None
        return CoefficientChoice.from_dict(json.loads(self.coefficient_path.read_text()))

    def save_coefficient(self, choice: Any, sweep: pd.DataFrame | None = None, figure: Any = None) -> None:
        """Keep the run's steering coefficient, and the sweep table and figure that chose it."""
        self.calibration_dir.mkdir(parents=True, exist_ok=True)
        # Each file through a temporary file of its own: under a launcher every rank calibrates the
        # same way and saves the same choice, and no rank may rename another's half-written file.
        if sweep is not None:
            with atomic_path(self.calibration_sweep_path, sync=False) as tmp:
                sweep.to_csv(tmp, index=False)
        if figure is not None:
            with atomic_path(self.calibration_sweep_path.with_suffix(".html"), sync=False) as tmp:
                figure.write_html(tmp, include_plotlyjs=True)
        # The record last: a run has a coefficient only once its sweep is saved.
        atomic_write_text(self.coefficient_path, choice.to_json())

    def sweep(self) -> pd.DataFrame | None:
        """The run's coefficient sweep (or, in runs written before it, a method's own), or ``None``."""
        if self.calibration_sweep_path.is_file():
            return pd.read_csv(self.calibration_sweep_path)
        paths = (
            sorted(self.explanations_dir.glob("*-coefficient-sweep.csv"))
            if self.explanations_dir.is_dir()
            else []
        )
        return _read_csv(paths[0], "a coefficient sweep") if paths else None

    def save_reference(
        self,
        reference_mean: torch.Tensor,
        reference_max: torch.Tensor,
        scorer: str = DEFAULT_SCORER,
        key: str | None = None,
    ) -> None:
        """Keep a scorer's negatives ``[n_reference, d_sae]`` (mean- and max-pooled activations),
        under ``key`` (the reference set's settings, :func:`reference_key`) when given."""
        from vis_steer_lens.atomic import save_safetensors

        self.scores_dir.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": reference_mean.float().contiguous(), "max": reference_max.float().contiguous()}
        save_safetensors(tensors, self.reference_path(scorer, key))

    def reference(
        self, scorer: str = DEFAULT_SCORER, key: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The negatives saved by :meth:`save_reference` (under ``key``), or ``None``."""
        from vis_steer_lens.atomic import load_safetensors

        path = self.reference_path(scorer, key)
        if not path.is_file():
            return None
        tensors = load_safetensors(path, "reference activations", _REFERENCE_FIX)
        return tensors["mean"], tensors["max"]

    def scored(
        self, scorer: str = DEFAULT_SCORER, names: list[str] | None = None
    ) -> tuple[pd.DataFrame, dict[str | None, tuple[torch.Tensor, torch.Tensor]]] | None:
        """Every method's scores with their AUROCs, each against the reference set it was scored with.

        Returns:
            ``(scores, references)``: the scores (:func:`~vis_steer_lens.evaluate.scores_from_rows`'
            columns and ``reference_key``) and each reference set by key; ``None`` when the run has no
            scores or no reference for them.
        """
        from vis_steer_lens.evaluate.generation_auroc import scores_from_rows

        rows = self.scores(scorer, names)
        if rows is None:
            return None
        keys = rows["reference"] if "reference" in rows else pd.Series([None] * len(rows), index=rows.index)
        keys = keys.where(keys.notna(), None)
        frames, references = [], {}
        for key in dict.fromkeys(keys):
            reference = self.reference(scorer, key)
            if reference is None:
                return None
            references[key] = reference
            part = rows[keys.map(lambda k, key=key: k == key)]
            frames.append(scores_from_rows(part.to_dict("records"), *reference).assign(reference_key=key))
        return pd.concat(frames, ignore_index=True), references

    def contents(self) -> dict[str, Any]:
        """What the run holds: mined or not, explained and scored methods, comparison or not."""
        return {
            "mined": self.has_mined(),
            "explanations": self.explanation_names(),
            "scores": self.score_names(),
            "concepts": self.concepts_path.is_file(),
            "coefficient": self.coefficient_path.is_file(),
            "comparison": self.comparison_path.is_file(),
        }


def reference_key(source_id: str, n_reference: int) -> str:
    """The key of a reference set: how many images, and a hash of the source they are drawn from."""
    import hashlib

    return f"n{int(n_reference)}-{hashlib.sha1(str(source_id).encode()).hexdigest()[:8]}"


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    """A table the run wrote, with a damaged one named."""
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
        from vis_steer_lens.atomic import damaged

        raise damaged(path, err, what, "delete it and run the step that writes it again") from err


def _read_rows(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.DataFrame(read_jsonl(path, repair=False))


def with_method_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill ``direction`` (``"sae"``), ``method_label`` and ``is_control`` where rows lack them."""
    frame = frame.copy()
    if "direction" not in frame:
        frame["direction"] = "sae"
    frame["direction"] = frame["direction"].where(frame["direction"].notna(), "sae")
    labels = [method_label(m, d) for m, d in zip(frame["method"], frame["direction"], strict=True)]
    controls = [str(d) != "sae" for d in frame["direction"]]
    if "method_label" in frame:
        frame["method_label"] = frame["method_label"].where(
            frame["method_label"].notna(), pd.Series(labels, index=frame.index)
        )
    else:
        frame["method_label"] = labels
    if "is_control" in frame:
        known = frame["is_control"].notna()
        frame["is_control"] = [
            bool(v) if k else c for v, k, c in zip(frame["is_control"], known, controls, strict=True)
        ]
    else:
        frame["is_control"] = controls
    return frame


__all__ = [
    "DEFAULT_SCORER",
    "RunFolder",
    "RunFolderError",
    "RunOwnerError",
    "reference_key",
    "run_name",
    "with_method_labels",
]
