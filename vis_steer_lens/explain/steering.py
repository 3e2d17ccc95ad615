"""Steering: explain a feature by adding its decoder direction to an empty image's activations.

For a feature ``f`` of an SAE at vision hook ``h``: the chat-templated instruction with an empty
image, ``coefficient * W_dec[f]`` added to the activation at ``h`` (at every patch, or at given
patches), greedy decoding, and the answer with its prefix stripped is the explanation.

Faster than the paper's procedure in three ways that do not change the answer: the empty
image's activations below the hook are computed once and reused (only the layers after it, the
projector and the language model run per batch); the prompt is tokenised once; and each row
stops at the end of its sentence and then leaves the batch, KV cache included, so the rows
still decoding do not carry the finished ones (:func:`.decoding.greedy_decode`: the same tokens
as greedy ``generate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from sae_lens import SAE

from vis_steer_lens.activations import hook_activations, patch_tokens
from vis_steer_lens.explain.base import Explainer
from vis_steer_lens.explain.decoding import greedy_decode
from vis_steer_lens.explain.prompts import PromptSet, get_prompt
from vis_steer_lens.explain.settings import SteeringSettings, check_positive_int
from vis_steer_lens.explain.sweep import (
    DEFAULT_MULTIPLES,
    DEFAULT_SAMPLE_SIZE,
    select_by_score,
    sweep_figure,
    sweep_table,
)
from vis_steer_lens.explain.text import explanation_and_flag
from vis_steer_lens.memory import explain_bytes_per_row
from vis_steer_lens.saes.validation import check_sae_steers

if TYPE_CHECKING:
    from vis_steer_lens.hooked_vlm import HookedVLM

#: Multiples of the hook's mean patch norm tried by the ``"auto"`` coefficient sweep.
DEFAULT_SWEEP = DEFAULT_MULTIPLES
#: Features the ``"auto"`` sweep explains at each multiple (see :mod:`.sweep`).
DEFAULT_SWEEP_FEATURES = DEFAULT_SAMPLE_SIZE
#: What the direction is added to at the hook: the empty image's activation (the paper's), its SAE
#: reconstruction, or zeros (the zero embedding at the hook).
STEER_ON = ("activation", "reconstruction", "zero")


class SteeringExplainer(Explainer):
    """Explain SAE features by steering a VLM on an empty image.

    Args:
        model: A :class:`~vis_steer_lens.HookedVLM` with a processor.
        sae: A ``sae_lens.SAE`` whose hook is a vision hook of ``model``.
        coefficient: Scale of the added direction: a number, a mapping feature → number, or
            ``"auto"`` (a calibration sweep, see :meth:`calibrate`, runs before the first batch
            on a sample of the features being explained; it costs ``len(sweep_multiples) *
            sweep_features`` steered rows, 448 by default; the sweep's rows at the chosen
            multiple are reused as explanations). In a run folder, prefer the run's one
            coefficient (:func:`~vis_steer_lens.explain.calibration.calibrate_run`), which
            every explain of the run, controls included, shares.
        empty_image: ``"white"`` (the paper's), ``"black"``, ``"gray"``, ``"mean"`` or ``"zeros"``.
        prompt: A prompt id (``"default"``, ``"paper"``, ``"toy"``) or a :class:`PromptSet`.
        max_new_tokens: Cap on generated tokens (rows usually stop earlier, at their sentence end).
        batch_size: Features decoded together (one prefill, then rows retire as they end); each row
            steers a different feature. ``"auto"``: the largest batch whose estimated peak fits in
            the free memory of the model's device (:mod:`vis_steer_lens.memory`), chosen when the
            work starts and recorded in each row's ``batch_size``.
        positions: Patches of the empty image to steer: ``None`` (all), a bool mask over its own
            grid (``[h, w]`` or row-major ``[h * w]``; the grid is ``explainer.geometry.grid(0)``), or
            a region in image coordinates, ``(left, top, right, bottom)`` as fractions of the
            image's width and height in ``[0, 1]`` (the patches whose centres lie inside), which
            means the same on every family whatever its grid.
        include_prefix_tokens: Steer the prefix tokens (a class token) too; by default only the
            patches are steered.
        direction: ``"sae"``, or a control: ``"random_norm_matched"`` (a random direction with the
            decoder row's norm) or ``"permuted"`` (each feature gets another feature's direction:
            the list rotated by half its length).
        reuse_prefix: Reuse the empty image's activations below the hook (``False`` runs the full
            tower with a hook, as the paper's code does; the explanations are the same).
        stop_at_sentence_end: Stop each row at its sentence end instead of ``max_new_tokens``.
        sweep_multiples: Multiples of the mean patch norm tried by ``coefficient="auto"``
            (:data:`DEFAULT_SWEEP`).
        sweep_features: How many features the sweep explains per multiple (64); a seeded sample
            of the features being explained.
        seed: Seeds random directions and the sweep's feature sample.
        select_by: What ``coefficient="auto"`` selects by: ``None`` for the distinct-answers rule
            (:func:`~vis_steer_lens.explain.sweep.sweep_table`), or a scorer: a callable
            ``rows -> float`` (higher is better) over one multiple's sweep rows (a DataFrame with
            ``feature`` and ``explanation``), e.g. :func:`~vis_steer_lens.explain.sweep.scorer_selector`
            of a :class:`~vis_steer_lens.SegmentationIoUScorer` (the paper selects by mean IoU on
            held-out features). The best-scoring multiple is chosen (the smaller one on ties).
        steer_on: What the direction is added to at the hook (:data:`STEER_ON`): ``"activation"``
            (the empty image's own, the paper's), ``"reconstruction"`` (the SAE's reconstruction
            of it, ``decode(encode(x))``: steering inside the SAE's model of the activation) or
            ``"zero"`` (the residual at the hook replaced by zeros, every token: the direction
            alone). The mean patch norm (:meth:`patch_norm`) stays the empty image's own.
    """

    method = "steering"

    def __init__(
        self,
        model: HookedVLM,
        sae: SAE,
        coefficient: float | str | Mapping[int, float] = "auto",
        *,
        empty_image: str = "white",
        prompt: str | PromptSet = "default",
        max_new_tokens: int = 48,
        batch_size: int = 32,
        positions: torch.Tensor | tuple[float, float, float, float] | None = None,
        include_prefix_tokens: bool = False,
        direction: str = "sae",
        reuse_prefix: bool = True,
        stop_at_sentence_end: bool = True,
        sweep_multiples: Sequence[float] = DEFAULT_SWEEP,
        sweep_features: int = DEFAULT_SWEEP_FEATURES,
        seed: int = 0,
        select_by: Any = None,
        steer_on: str = "activation",
    ):
        super().__init__(
            model, sae, prompt=get_prompt(prompt), batch_size=batch_size, direction=direction, seed=seed
        )
        checked = SteeringSettings(coefficient=coefficient, empty_image=empty_image, batch_size=batch_size)
        coefficient = checked.coefficient
        self.hook_name = check_sae_steers(sae, model)
        self.coefficient = coefficient
        self.empty_image = empty_image
        self.max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens")
        self.reuse_prefix = reuse_prefix
        self.stop_at_sentence_end = stop_at_sentence_end
        self.sweep_multiples = tuple(sweep_multiples)
        self.sweep_features = sweep_features
        self.select_by = select_by
        if steer_on not in STEER_ON:
            raise ValueError(f"steer_on must be one of {STEER_ON}, got {steer_on!r}.")
        self.steer_on = steer_on
        self.calibration: pd.DataFrame | None = None
        # Sweep rows by (feature, direction feature, coefficient), reused when explaining at the choice.
        self._sweep_rows: dict[tuple[int, int, float], dict[str, Any]] = {}
        self._on_text: Callable[[int, str], None] | None = None  # set while explain() streams
        self.include_prefix_tokens = include_prefix_tokens
        self._hook = model.vision.parse_hook_name(self.hook_name)
        self._prepare_inputs()
        self._positions = self._position_mask(positions)

    # ------------------------------------------------------------------ setup
    def _position_mask(self, positions: torch.Tensor | None) -> torch.Tensor | None:
        """The tokens of the empty image to steer ``[tokens]`` in the tower's order, or ``None`` for all.

        ``positions`` is a mask over the empty image's patch grid, ``[h, w]`` or row-major ``[h * w]``
        (its grid: ``self.geometry.grid(0)``); prefix tokens follow ``include_prefix_tokens``.
        """
        geometry = self.geometry
        h, w = geometry.grid(0)
        has_prefix = bool(geometry.is_prefix.any())
        if positions is None:
            if not has_prefix or self.include_prefix_tokens:
                return None
            # Every patch, of every view (AnyRes: the base crop, the tiles and their padding).
            return geometry.is_patch[geometry.image_positions(0)].cpu()
        elif isinstance(positions, tuple) and len(positions) == 4 and not isinstance(positions[0], bool):
            mask = _region_mask(positions, h, w).flatten()
        else:
            mask = torch.as_tensor(positions).flatten().bool()
            if mask.numel() != h * w:
                raise ValueError(
                    f"positions must have {h * w} entries (one per patch of the {h}x{w} empty image), "
                    f"got {mask.numel()}."
                )
        mask_map = mask.reshape(h, w).to(geometry.row.device)
        tokens = geometry.from_patch_map(mask_map, 0, fill=self.include_prefix_tokens)
        base = geometry.base_patch_positions(0)  # AnyRes: the base crop sees the same region, coarser
        if len(base):
            side = math.isqrt(len(base))
            pooled = torch.nn.functional.adaptive_max_pool2d(mask_map[None, None].float(), (side, side))
            tokens[base - geometry.image_positions(0).start] = pooled.flatten() > 0
        return tokens.cpu()

    def _prepare_inputs(self) -> None:
        """Tokenise the prompt once and compute the empty image's activations below the hook.

        The prompt is built from the empty image itself (its size fixes the number of soft tokens
        for native-resolution families: the adapter's ``empty_image_size``).
        """
        vlm = self.model
        image_inputs = vlm.empty_image_inputs(self.empty_image)
        inputs = vlm.prompt_inputs([vlm.empty_image(self.empty_image)], self.prompt.steering)
        self._inputs, _ = vlm.split_inputs(inputs)
        self._pixels = image_inputs.pop("pixel_values")
        self._tower_inputs = image_inputs
        self.geometry = vlm.image_geometry(self._pixels, **image_inputs)
        # Packed towers (one sequence) and AnyRes ones (several crops per image) steer copies of the
        # empty image as one batch with its geometry; fixed grids expand one row per copy.
        self._packed = self.geometry.packed or self.geometry.crop_tokens is not None
        self._layer = self._hook.layer
        extra = {"geometry": self.geometry} if self._packed else {}
        with torch.no_grad():
            if self._layer is None or not self.reuse_prefix:
                self._start_layer = None
                self._prefix = None
            elif self._hook.site == "hook_resid_post":
                # The hook is the residual stream itself: add to it and start at the next block.
                self._start_layer = self._layer + 1
                self._prefix = vlm.vision(self._pixels, stop_at_layer=self._layer + 1, **extra)
            else:
                self._start_layer = self._layer
                self._prefix = vlm.vision(self._pixels, stop_at_layer=self._layer, **extra)
        self._tokenizer = vlm.tokenizer
        self._eos = vlm.end_of_answer_ids()

    def _batch_geometry(self, batch: int):
        """The geometry of ``batch`` copies of the empty image (packed one after the other)."""
        cache = self.__dict__.setdefault("_batch_geometries", {})
        if batch not in cache:
            pixels, tower_inputs = self._batch_image_inputs(batch)
            cache[batch] = self.model.image_geometry(pixels, **tower_inputs)
        return cache[batch]

    def _batch_image_inputs(self, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``batch`` copies of the empty image's tower inputs (images are concatenated along dim 0)."""

        def repeat(value: torch.Tensor) -> torch.Tensor:
            return value.repeat(batch, *[1] * (value.ndim - 1))

        return repeat(self._pixels), {k: repeat(v) for k, v in self._tower_inputs.items()}

    # ------------------------------------------------------------------ coefficients
    def patch_norm(self) -> float:
        """Mean L2 norm of the empty image's activation at the hook, over patches (prefix tokens left out)."""
        acts = patch_tokens(
            hook_activations(self.model, self.hook_name, self._pixels, flatten=True, **self._tower_inputs),
            self.model,
        )
        return float(acts.float().norm(dim=-1).mean())

    def _coefficients(self, features: list[int]) -> list[float]:
        if self.coefficient == "auto":
            if self.calibration is None:
                self.calibrate()
            return [float(self.chosen_coefficient)] * len(features)
        if isinstance(self.coefficient, Mapping):
            missing = [f for f in features if f not in self.coefficient]
            if missing:
                raise KeyError(f"No coefficient given for features {missing[:10]}.")
            return [float(self.coefficient[f]) for f in features]
        return [float(self.coefficient)] * len(features)

    def calibrate(self, features: Iterable[int] | None = None, progress: bool = False) -> pd.DataFrame:
        """Choose the coefficient by a sweep over multiples of the hook's mean patch norm.

        For each multiple, a sample of features is explained; the score is the share of answers
        that differ from the unsteered answer times the share that are not flagged (empty,
        unfinished, or repeating a word), and the chosen multiple is the centre of the range that
        scores near the best (:func:`~vis_steer_lens.explain.sweep.sweep_table`). Sets
        ``self.chosen_coefficient`` and ``self.calibration``.

        Cost: ``len(sweep_multiples) * len(features)`` steered rows (448 by default) and one
        unsteered row, queued into
        batches of ``batch_size``; the sweep's rows at the chosen multiple are kept and returned as
        explanations when those features are explained at that coefficient.

        Args:
            features: Features to sweep on; by default a seeded sample of ``sweep_features`` of
                the features being explained (of all features when called before ``explain``).
            progress: Show a progress bar.

        Returns:
            One row per multiple: multiple, coefficient, distinct_fraction,
            degenerate_fraction, score, chosen, and the explanations.
        """
        from tqdm.auto import tqdm

        from vis_steer_lens.explain.sweep import sample_features

        if features is None:
            pool = self._requested if self._requested else list(range(self.sae.cfg.d_sae))
            features = sample_features(pool, self.sweep_features, self.seed)
        features = list(features)
        if not features:
            raise ValueError("The coefficient sweep needs at least one feature (sweep_features >= 1).")
        direction_of = dict(zip(features, self.direction_features(features), strict=True))
        norm = self.patch_norm()
        self._resolve_batch_size()
        # Every (multiple, feature) row in one queue, so the sweep fills whole batches; the first
        # row is unsteered (coefficient 0): the answer that steering should change.
        queue = [(0.0, features[0])] + [
            (multiple * norm, f) for multiple in self.sweep_multiples for f in features
        ]
        generated: list[dict[str, Any]] = []
        bar = tqdm(total=len(queue), desc="coefficient sweep", unit="row", disable=not progress)
        try:
            for start in range(0, len(queue), self.batch_size):
                chunk = queue[start : start + self.batch_size]
                chunk_features = [f for _, f in chunk]
                generated += self._generate(
                    chunk_features, [direction_of[f] for f in chunk_features], [c for c, _ in chunk]
                )
                bar.update(len(chunk))
        finally:
            bar.close()
        null, generated = generated[0], generated[1:]
        n = len(features)
        sweep = sweep_table(
            {m: generated[i * n : (i + 1) * n] for i, m in enumerate(self.sweep_multiples)},
            norm,
            null_answer=null["explanation"],
        )
        if self.select_by is not None:
            sweep = select_by_score(
                sweep,
                {m: generated[i * n : (i + 1) * n] for i, m in enumerate(self.sweep_multiples)},
                self.select_by,
            )
        self._sweep_rows = {
            (r["feature"], r["direction_feature"], float(r["coefficient"])): r for r in generated
        }
        self.chosen_coefficient = float(sweep.loc[sweep["chosen"], "coefficient"].iloc[0])
        self.calibration = sweep
        return sweep

    def calibration_figure(self):
        """A plotly figure of the last calibration sweep (distinctness, degeneracy and score per multiple)."""
        if self.calibration is None:
            raise ValueError("No calibration yet: call calibrate() or explain with coefficient='auto'.")
        return sweep_figure(self.calibration, self.hook_name)

    # ------------------------------------------------------------------ generation
    def run_config(self) -> dict[str, Any]:
        config = super().run_config()
        coefficient = self.coefficient if not isinstance(self.coefficient, Mapping) else "per-feature"
        config.update(
            {
                "hook_name": self.hook_name,
                "coefficient": coefficient,
                "sweep_multiples": list(self.sweep_multiples) if self.coefficient == "auto" else None,
                "empty_image": self.empty_image,
                "max_new_tokens": self.max_new_tokens,
                "positions": None if self._positions is None else self._positions.int().tolist(),
                "stop_at_sentence_end": self.stop_at_sentence_end,
            }
        )
        if self.steer_on != "activation":  # recorded only when set, so earlier runs still resume
            config["steer_on"] = self.steer_on
        return config

    def _steering_base(self, act: torch.Tensor) -> torch.Tensor:
        """What the direction is added to at the hook (``steer_on``), the shape of ``act``."""
        if self.steer_on == "zero":
            return torch.zeros_like(act)
        if self.steer_on == "reconstruction":
            flat = act.flatten(2) if act.ndim > 3 else act  # [batch, tokens, d_in]
            weight = self.sae.W_dec
            recon = self.sae.decode(self.sae.encode(flat.to(device=weight.device, dtype=weight.dtype)))
            return recon.reshape(act.shape).to(device=act.device, dtype=act.dtype)
        return act

    def steered_image_features(self, directions: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
        """The empty image's soft tokens with each row steered, before any text: what the language
        model receives (public for tools that read the steered image, e.g. the dashboard's text side).

        Args:
            directions: ``[batch, d_in]`` directions added at the SAE's hook.
            coefficients: One multiplier per row.

        Returns:
            ``[batch, soft_tokens, d_lm]``, row ``i`` steered by ``coefficients[i] * directions[i]``.
        """
        vlm = self.model
        batch = directions.shape[0]
        delta = torch.tensor(coefficients, dtype=torch.float32).unsqueeze(-1) * directions.float()
        delta = delta.to(device=vlm.device).unsqueeze(1)  # [batch, 1, d_in]
        if self._positions is not None:
            delta = delta * self._positions.to(vlm.device).view(1, -1, 1)

        def add(act: torch.Tensor, hook: Any) -> torch.Tensor:
            act = self._steering_base(act)
            if self._packed:  # [1, batch * tokens, ...] or AnyRes crops: copy i's tokens are contiguous
                rows = act.reshape(batch, -1, *act.shape[2:])
                return (rows + self._hook.unflatten(delta, rows).to(act.dtype)).reshape(act.shape)
            return act + self._hook.unflatten(delta, act).to(act.dtype)

        if not self._packed:
            if self._prefix is None:  # no reuse: the full tower, with the direction added at the hook
                with vlm.hooks(fwd_hooks=[(self.hook_name, add)]):
                    return vlm.encode_images(self._pixels.expand(batch, -1, -1, -1))
            resid = self._prefix.expand(batch, -1, -1)
            if self._start_layer == self._layer + 1:  # the hook is the cached residual stream itself
                return vlm.encode_images(resid=add(resid, None), start_at_layer=self._start_layer)
            with vlm.hooks(fwd_hooks=[(self.hook_name, add)]):
                return vlm.encode_images(resid=resid, start_at_layer=self._start_layer)
        # Packed towers: the batch's copies of the empty image form one sequence; one row of soft
        # tokens per copy.
        geometry = self._batch_geometry(batch)
        if self._prefix is None:
            pixels, tower_inputs = self._batch_image_inputs(batch)
            with vlm.hooks(fwd_hooks=[(self.hook_name, add)]):
                soft = vlm.encode_images(pixels, geometry=geometry, **tower_inputs)
        else:
            resid = (
                self._prefix.repeat(1, batch, 1) if self.geometry.packed else self._prefix.repeat(batch, 1, 1)
            )
            if self._start_layer == self._layer + 1:
                soft = vlm.encode_images(
                    resid=add(resid, None), start_at_layer=self._start_layer, geometry=geometry
                )
            else:
                with vlm.hooks(fwd_hooks=[(self.hook_name, add)]):
                    soft = vlm.encode_images(resid=resid, start_at_layer=self._start_layer, geometry=geometry)
        return soft.reshape(batch, -1, soft.shape[-1])

    def _generate(
        self, features: list[int], direction_features: list[int], coefficients: list[float]
    ) -> list[dict]:
        vlm = self.model
        batch = len(features)
        with torch.no_grad():
            image_features = self.steered_image_features(
                self.directions(features, direction_features), coefficients
            )
            finite = torch.isfinite(image_features.flatten(1)).all(dim=1)
            if not bool(finite.all()):
                bad = [
                    (f, c) for f, c, ok in zip(features, coefficients, finite.tolist(), strict=True) if not ok
                ]
                raise ValueError(
                    f"Steering made the image tokens non-finite (inf or NaN) for feature(s) "
                    f"{', '.join(f'{f} (coefficient {c:g})' for f, c in bad[:5])}: the coefficient is too large "
                    f"for {vlm.dtype}. Use a smaller one (the hook's mean patch norm is {self.patch_norm():.3g})."
                )
            inputs = {k: v.expand(batch, -1) for k, v in self._inputs.items()}
            prompt_length = inputs["input_ids"].shape[1]
            prefix = self.prompt.prefix(self.method)
            stopping = self._stopping_criteria(prompt_length)
            # Greedy, as vlm.generate would be, but rows leave the batch once they have ended.
            tokens, ended = greedy_decode(
                vlm,
                inputs,
                image_features,
                max_new_tokens=self.max_new_tokens,
                eos_token_ids=self._eos,
                pad_token_id=self._tokenizer.pad_token_id,
                stop=stopping,
                return_finished=True,
                on_step=self._text_streamer(features),
            )
        new_tokens = tokens[:, prompt_length:]
        rows = []
        for i, feature in enumerate(features):
            raw = self._tokenizer.decode(new_tokens[i], skip_special_tokens=True)
            # Finished: ended by EOS or by its sentence end, not cut off at max_new_tokens.
            explanation, flag = explanation_and_flag(raw, prefix, self.prompt.strip, bool(ended[i]))
            rows.append(
                {
                    "feature": feature,
                    "direction_feature": direction_features[i],
                    "raw_generation": raw,
                    "explanation": explanation,
                    "flag": flag,
                    "coefficient": coefficients[i],
                }
            )
        return rows

    def explain(
        self,
        features: str | int | Iterable[int] | None = None,
        *,
        on_text: Callable[[int, str], None] | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Explain features, one row each (see :meth:`Explainer.explain`).

        Args:
            features: Feature ids (an iterable, an int, a ``"0:512"`` / ``"1,5,9"`` string, or
                ``None`` for all).
            on_text: Streams the answers as they are decoded: called after every token as
                ``on_text(feature, raw_text_so_far)`` for each feature still decoding (the text
                decoded as the row's ``raw_generation`` is, so the last call's text is that
                field). Rows reused from the coefficient sweep are reported once, whole.
            **kwargs: ``out``, ``resume``, ``progress``, ``world``, as the base class takes them.

        Returns:
            A DataFrame, one row per feature in the order of ``features``, as the base class gives it.
        """
        self._on_text = on_text
        try:
            return super().explain(features, **kwargs)
        finally:
            self._on_text = None

    def _text_streamer(self, features: list[int]) -> Callable[[torch.Tensor, torch.Tensor], None] | None:
        """A ``greedy_decode`` step callback that hands each row's answer so far to ``on_text``."""
        on_text = self._on_text
        if on_text is None:
            return None
        tokens: list[list[int]] = [[] for _ in features]

        def on_step(rows: torch.Tensor, next_tokens: torch.Tensor) -> None:
            for row, token in zip(rows.tolist(), next_tokens.tolist(), strict=True):
                tokens[row].append(token)
                on_text(features[row], self._tokenizer.decode(tokens[row], skip_special_tokens=True))

        return on_step

    def _dead_fields(self) -> dict[str, Any]:
        return {
            "coefficient": self._coefficients([0])[0] if not isinstance(self.coefficient, Mapping) else None,
            "empty_image": self.empty_image,
        }

    def _row_bytes(self) -> int:
        # With prefix reuse only the blocks after the hook run per row.
        h, w = self.geometry.grid(0)  # the empty image's own patches (native-resolution towers)
        return explain_bytes_per_row(
            self.model, 1, self.max_new_tokens, from_layer=self._start_layer or 0, patches=h * w
        )

    def _explain_batch(self, features: list[int], direction_features: list[int]) -> list[dict[str, Any]]:
        coefficients = self._coefficients(features)
        keys = [(f, d, float(c)) for f, d, c in zip(features, direction_features, coefficients, strict=True)]
        fresh = [i for i, key in enumerate(keys) if key not in self._sweep_rows]
        made = (
            self._generate(
                [features[i] for i in fresh],
                [direction_features[i] for i in fresh],
                [coefficients[i] for i in fresh],
            )
            if fresh
            else []
        )
        by_index = dict(zip(fresh, made, strict=True))
        generated = [by_index[i] if i in by_index else self._sweep_rows[key] for i, key in enumerate(keys)]
        if self._on_text is not None:
            for i, key in enumerate(keys):
                if i not in by_index:  # a sweep row, decoded before streaming was asked for
                    self._on_text(features[i], self._sweep_rows[key]["raw_generation"])
        return [
            self._row(
                g["feature"],
                g["direction_feature"],
                explanation=g["explanation"],
                flag=g["flag"],
                raw_generation=g["raw_generation"],
                coefficient=g["coefficient"],
                empty_image=self.empty_image,
            )
            for g in generated
        ]


def _region_mask(region: tuple[float, float, float, float], h: int, w: int) -> torch.Tensor:
    """``[h, w]`` bool: the patches of an ``h x w`` grid whose centres lie in ``(left, top, right,
    bottom)``, given as fractions of the image's width and height.

    Raises:
        ValueError: A region outside ``[0, 1]``, empty, or holding no patch centre.
    """
    left, top, right, bottom = (float(v) for v in region)
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise ValueError(
            f"A region is (left, top, right, bottom) as fractions of the image in [0, 1] with left < right "
            f"and top < bottom, got {region}."
        )
    rows = (torch.arange(h) + 0.5) / h
    cols = (torch.arange(w) + 0.5) / w
    mask = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    if not bool(mask.any()):
        raise ValueError(f"The region {region} holds no patch centre of the {h}x{w} grid; make it larger.")
    return mask
