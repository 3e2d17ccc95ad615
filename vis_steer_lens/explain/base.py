"""What every explainer shares: feature validation, batching, resumable result files, timing."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from sae_lens import SAE
from tqdm.auto import tqdm

from vis_steer_lens.activations import batched
from vis_steer_lens.distributed import World, barrier, current_world, gather_objects, shard
from vis_steer_lens.explain.labels import method_label
from vis_steer_lens.explain.prompts import PromptSet
from vis_steer_lens.explain.results import ResultsFile
from vis_steer_lens.explain.settings import DIRECTIONS
from vis_steer_lens.explain.text import SentenceEndStop
from vis_steer_lens.families import NoLanguageModelError
from vis_steer_lens.memory import auto_batch_size, check_batch_size
from vis_steer_lens.saes.metadata import sae_identity
from vis_steer_lens.saes.validation import check_feature_ids
from vis_steer_lens.store import merge_shards, shard_path

if TYPE_CHECKING:
    from vis_steer_lens.hooked_vlm import HookedVLM

#: Columns of every explainer's results, in this order.
RESULT_COLUMNS = [
    "sae_id",
    "feature",
    "method",
    "direction",
    "method_label",
    "is_control",
    "direction_feature",
    "explanation",
    "flag",
    "raw_generation",
    "coefficient",
    "empty_image",
    "image_ids",
    "prompt_id",
    "model_name",
    "seconds",
]


def _without_dropped(ids: list[int], sae: Any) -> list[int]:
    """``ids`` less the features an SAE left out for NaN or inf weights (said in a warning)."""
    dropped = set((sae.cfg.metadata.get("dropped_features") or []) if sae is not None else [])
    left_out = [f for f in ids if f in dropped]
    if not left_out:
        return ids
    import logging

    logging.getLogger(__name__).warning(
        "Not explaining %d feature(s) left out for NaN or inf weights: %s.",
        len(left_out),
        ", ".join(map(str, left_out[:10])) + (" ..." if len(left_out) > 10 else ""),
    )
    return [f for f in ids if f not in dropped]


def parse_features(
    spec: str | int | Iterable[int] | None, d_sae: int, live: Iterable[int] | None = None
) -> list[int]:
    """Feature ids from ``"0:512"``, ``"3,7,9"``, ``"live"``, an int, an iterable, or ``None`` (all).

    Args:
        spec: The selection.
        d_sae: The SAE's width (the end of an open range, and ``None``'s extent).
        live: The live features (those that fired in the mined statistics), for ``"live"``.

    Raises:
        ValueError: For a selection that names no feature (``""``, ``"5:5"``, ``"10:5"``), a
            range or id that is not a number, a feature named twice, or ``"live"`` without
            ``live`` (nothing mined).
    """
    if spec is None:
        return list(range(d_sae))
    if isinstance(spec, str) and spec.strip() == "live":
        if live is None:
            raise ValueError(
                "--features live needs mined statistics (which features fired): run `vis-steer-lens mine` "
                "on this run first, or name the features (e.g. '0:512')."
            )
        ids = sorted(int(f) for f in live)
        if not ids:
            raise ValueError(
                "No feature fired in the mined statistics, so 'live' names none; mine more images."
            )
        return ids
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, str):
        ids: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            try:
                if ":" in part:
                    start, _, stop = part.partition(":")
                    first, end = int(start or 0), int(stop) if stop else d_sae
                    if end <= first:
                        raise ValueError(f"the range {part!r} is empty (its end must be above its start)")
                    ids.extend(range(first, end))
                elif part:
                    ids.append(int(part))
            except ValueError as err:
                raise ValueError(
                    f"Bad feature selection {spec!r}: {err}. Use e.g. '0:512' or '3,7,9'."
                ) from None
    else:
        ids = [int(f) for f in spec]
    if not ids:
        raise ValueError(f"The feature selection {spec!r} names no feature; use e.g. '0:512' or '3,7,9'.")
    repeated = sorted({f for f in ids if ids.count(f) > 1}) if len(ids) != len(set(ids)) else []
    if repeated:
        raise ValueError(f"Features named more than once: {repeated[:10]}; name each feature once.")
    return ids


class Explainer:
    """Base class: ``explain(features) -> DataFrame`` with one row per feature.

    Subclasses set :attr:`method`, implement :meth:`_explain_batch` and extend
    :meth:`run_config` with every setting that changes their output.
    """

    method: str = "base"

    def __init__(
        self,
        model: HookedVLM,
        sae: SAE | None,
        *,
        prompt: PromptSet,
        batch_size: int | str,
        direction: str,
        seed: int,
        sae_id: str | None = None,
        d_sae: int | None = None,
        live_features: Iterable[int] | None = None,
    ):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
        from vis_steer_lens.hooked_vit import HookedViT
        from vis_steer_lens.hooked_vlm import HookedVLM

        if isinstance(model, HookedViT):
            raise NoLanguageModelError(self._tower_refusal(model))
        if not isinstance(model, HookedVLM):
            raise TypeError(
                f"An explainer needs a HookedVLM, got {type(model).__name__}. Wrap a Hugging Face model "
                "with HookedVLM.from_hf(model, processor) or load one with HookedVLM.from_pretrained(...)."
            )
        self.model = model
        self.sae = sae
        self.prompt = prompt
        # "auto" is resolved when the work starts (:meth:`_resolve_batch_size`), once the
        # subclass knows what a row holds.
        self.batch_size: int | str = check_batch_size(batch_size)
        self.batch_size_auto = self.batch_size == "auto"
        self.direction = direction
        self.seed = seed
        self._requested: list[int] = []  # the features of the current explain() call
        if sae is None and (sae_id is None or d_sae is None):
            raise ValueError("An explainer needs the SAE, or its sae_id and d_sae.")
        self.sae_id = sae_id or sae_identity(sae)
        self.d_sae = d_sae or sae.cfg.d_sae
        # Features known to fire; the others get a "dead" row without a model call (None: all live).
        self.live_features = None if live_features is None else {int(f) for f in live_features}

    def _tower_refusal(self, vit: Any) -> str:
        """Why this explainer cannot run on a vision tower alone (a HookedViT), and what to do."""
        return (
            f"The {self.method} explainer needs a vision-language model, got a HookedViT "
            f"({vit.cfg.family} tower {vit.cfg.model_name!r}), which has no language model: it adds SAE "
            "directions to the tower and reads what the language model then says. On a tower alone, mine "
            "and use Top-k with any HookedVLM as explainer_model."
        )

    @property
    def is_control(self) -> bool:
        """Whether this explainer is a control (a direction other than the SAE's own)."""
        return self.direction != "sae"

    @property
    def label(self) -> str:
        """The label of this explainer's rows in tables: ``"steering"``, ``"steering (permuted direction)"``."""
        return method_label(self.method, self.direction)

    # ------------------------------------------------------------------ directions
    def direction_features(self, features: list[int]) -> list[int]:
        """For each feature, the feature whose decoder direction is used (``permuted`` rotates the list)."""
        if self.direction == "permuted":
            if len(features) < 2:
                raise ValueError(
                    "direction='permuted' explains each feature with another feature's direction, so it needs "
                    f"at least 2 features; got {list(features)}."
                )
            shift = len(features) // 2
            return [features[(i + shift) % len(features)] for i in range(len(features))]
        return list(features)

    def directions(self, features: list[int], direction_features: list[int]) -> torch.Tensor:
        """Steering directions ``[len(features), d_in]`` as stored in the SAE (unit norm for TopK SAEs)."""
        if self.sae is None:
            raise ValueError(f"The {self.method} explainer has no SAE, so no decoder directions.")
        w_dec = self.sae.W_dec.detach()
        rows = w_dec[direction_features]
        if self.direction == "random_norm_matched":
            randoms = []
            for feature, row in zip(features, rows, strict=True):
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + feature)
                vector = torch.randn(row.shape[-1], generator=gen, dtype=torch.float32)
                randoms.append(vector / vector.norm() * row.float().norm())
            rows = torch.stack(randoms).to(w_dec.dtype)
        return rows

    # ------------------------------------------------------------------ the run
    def run_config(self) -> dict[str, Any]:
        """Settings that define this explainer's output (checked when resuming)."""
        return {
            "method": self.method,
            "sae_id": self.sae_id,
            "model_name": getattr(self.model, "model_name", None),
            "prompt_id": self.prompt.prompt_id,
            "direction": self.direction,
            "seed": self.seed,
        }

    def _explain_batch(self, features: list[int], direction_features: list[int]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _row_bytes(self) -> int:
        """Estimated peak bytes one feature adds to a batch (for ``batch_size="auto"``)."""
        raise NotImplementedError(f"{type(self).__name__} has no memory estimate; give batch_size.")

    def _resolve_batch_size(self) -> int:
        """Turn ``batch_size="auto"`` into the largest batch that fits the free memory
        (:func:`vis_steer_lens.memory.auto_batch_size`); a number stays as given."""
        if self.batch_size == "auto":
            self.batch_size = auto_batch_size(self._row_bytes(), self.model.device)
        return int(self.batch_size)

    def _stopping_criteria(self, prompt_length: int) -> list | None:
        """Per-row stop at the end of the answer's first sentence (if ``stop_at_sentence_end``)."""
        if not getattr(self, "stop_at_sentence_end", False):
            return None
        prefix = self.prompt.prefix(self.method)
        return [SentenceEndStop(self._tokenizer, prompt_length, prefix, self.prompt.strip)]

    def _row(self, feature: int, direction_feature: int, **fields: Any) -> dict[str, Any]:
        row = {
            "sae_id": self.sae_id,
            "feature": int(feature),
            "method": self.method,
            "direction": self.direction,
            "method_label": self.label,
            "is_control": self.is_control,
            "direction_feature": int(direction_feature),
            "prompt_id": self.prompt.prompt_id,
            "model_name": getattr(self.model, "model_name", None),
            "coefficient": None,
            "empty_image": None,
            "image_ids": None,
            "flag": None,
        }
        row.update(fields)
        return row

    def _dead_fields(self) -> dict[str, Any]:
        """The method's own fields of a row for a feature that never fired (e.g. its coefficient)."""
        return {}

    def _dead_row(self, feature: int, direction_feature: int) -> dict[str, Any]:
        """The row of a feature that never fired: no explanation, flagged ``"dead"``."""
        row = self._row(
            feature, direction_feature, explanation="", raw_generation="", flag="dead", **self._dead_fields()
        )
        row.update(seconds=0.0, batch_size=None)
        return row

    def _explain_all(
        self,
        todo: list[int],
        direction_of: dict[int, int],
        rows: dict[int, dict[str, Any]],
        store: ResultsFile | None,
        progress: bool,
    ) -> None:
        """Explain ``todo`` in batches: into ``store``, durably, as each batch ends, or else into ``rows``."""
        dead = [f for f in todo if self.live_features is not None and f not in self.live_features]
        if dead:  # no model call: one row each saying so, left out of scores and means
            dead_rows = [self._dead_row(f, direction_of[f]) for f in dead]
            if store is not None:
                store.append(dead_rows)
            else:
                rows.update({row["feature"]: row for row in dead_rows})
            todo = [f for f in todo if f in self.live_features]
        if not todo:
            return
        self._resolve_batch_size()
        bar = tqdm(total=len(todo), desc=f"{self.label} explanations", unit="feature", disable=not progress)
        try:
            for batch in batched(todo, self.batch_size):
                start = time.perf_counter()
                new_rows = self._explain_batch(batch, [direction_of[f] for f in batch])
                seconds = (time.perf_counter() - start) / len(batch)
                for row in new_rows:
                    row["seconds"] = seconds
                    row["batch_size"] = self.batch_size  # what "auto" chose, for the record
                if store is not None:
                    store.append(new_rows)  # the store keeps each row once, as written (JSON types)
                else:
                    rows.update({row["feature"]: row for row in new_rows})
                bar.update(len(batch))
        finally:
            bar.close()

    def explain(
        self,
        features: str | int | Iterable[int] | None = None,
        *,
        out: str | Path | None = None,
        resume: bool = True,
        progress: bool = True,
        world: World | None = None,
    ) -> pd.DataFrame:
        """Explain features, one row each.

        Under ``torchrun`` / ``accelerate launch`` each rank explains a disjoint share of the
        features (see :mod:`vis_steer_lens.distributed`); with ``out``, each rank appends to its
        own shard file and rank 0 merges them into ``out``, so ``out`` holds each feature once.
        Every rank returns the whole result.

        Args:
            features: Feature ids (an iterable, an int, a ``"0:512"`` / ``"1,5,9"`` string, or
                ``None`` for all).
            out: A ``.jsonl`` file to append rows to as batches finish; rerunning with the same
                path skips finished features (and refuses a file from other settings, or one that
                another live process is writing).
            resume: Continue an existing ``out`` file (``False``: fail if it exists).
            progress: Show a tqdm bar (rank 0's only, under a launcher).
            world: The ranks to share the work with (default: from the launcher's environment).

        Returns:
            A DataFrame with :data:`RESULT_COLUMNS`, rows in the order of ``features``.
        """
        ids = check_feature_ids(self.d_sae, parse_features(features, self.d_sae))
        ids = _without_dropped(ids, self.sae)
        config = self.run_config()
        if self.direction == "permuted":
            config["features"] = ids  # the rotation depends on the whole list
        world = current_world() if world is None else world
        self._requested = ids  # what a calibration samples from (the same list on every rank)
        direction_of = dict(zip(ids, self.direction_features(ids), strict=True))
        unique = list(dict.fromkeys(ids))
        progress = progress and world.is_main
        rows: dict[int, dict[str, Any]] = {}
        if out is None:
            self._explain_all(shard(unique, world), direction_of, rows, None, progress)
            for part in gather_objects(rows, world):
                rows.update(part)
        elif not world.distributed:
            with ResultsFile(out, config, resume=resume) as store:
                merge_shards(store)  # rows a crashed launch left in shards, as a launched rerun does
                # The store's rows are the results: one copy of each row, fresh or resumed alike.
                rows = store.rows
                self._explain_all([f for f in unique if f not in rows], direction_of, rows, store, progress)
        else:
            if world.is_main:  # rows a crashed launch left in shards first, so nothing is redone
                with ResultsFile(out, config, resume=resume) as store:
                    merge_shards(store)
            barrier(world)
            done = ResultsFile(out, config, read_only=True).rows
            todo = shard([f for f in unique if f not in done], world)
            with ResultsFile(shard_path(out, world.rank), config) as part:
                self._explain_all(todo, direction_of, {}, part, progress)
            barrier(world)
            if world.is_main:
                with ResultsFile(out, config) as store:
                    merge_shards(store)
            barrier(world)
            rows.update(ResultsFile(out, config, read_only=True).rows)
        frame = pd.DataFrame([rows[f] for f in ids if f in rows])
        return frame.reindex(columns=RESULT_COLUMNS + [c for c in frame.columns if c not in RESULT_COLUMNS])
