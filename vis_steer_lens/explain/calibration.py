"""One steering coefficient per run: the sweep that chooses it, and the record every explain reuses.

A steering coefficient is a property of the model, the SAE's hook, the empty image and the
prompt, not of the features a command happens to name. So a run folder chooses it once, on a
seeded sample of the run's live features (the mined statistics say which fired), keeps the
choice, the sweep table and its figure, and every later steering explain of the run reuses it:
an extension to more features, the SAE direction and both controls alike (a control that steered
at another coefficient would be no control).

Rules (:attr:`CoefficientChoice.rule`):

* ``"sweep"`` (``coefficient="auto"``): multiples of the hook's mean patch norm on the empty
  image (:data:`DEFAULT_MULTIPLES`), :data:`DEFAULT_SAMPLE_SIZE` sampled live features
  explained at each; the centre of the range of multiples that change the answer without
  breaking it wins (:mod:`vis_steer_lens.explain.sweep`).
  With ``select_by`` (a scorer, e.g. the segmentation IoU or the likelihood), the multiple whose
  rows score best on average wins instead, on validation features held out from those the
  command explains, as the paper chooses its coefficient by the mean IoU on held-out features;
  the choice records the scorer (:attr:`CoefficientChoice.select_by`).
* ``"fixed"``: an explicit number.
* ``"paper"``: the authors' protocol, a fixed coefficient of :data:`PAPER_COEFFICIENT` on the
  stored (unit-norm) decoder rows (Ferrando et al., CVPR 2026, ran 100 and 200).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vis_steer_lens.explain.steering import SteeringExplainer
from vis_steer_lens.explain.sweep import (
    DEFAULT_MULTIPLES,
    DEFAULT_SAMPLE_SIZE,
    WORKING_SHARE,
    sample_features,
    sweep_figure,
    sweep_table,
)

#: The fixed coefficient of the paper's protocol (absolute, on unit-norm decoder rows).
PAPER_COEFFICIENT = 100.0
#: Names a coefficient may be given by, besides a number.
COEFFICIENT_RULES = ("auto", "paper")
#: The default way the sweep chooses its multiple: the distinct-answers rule (:func:`sweep_table`).
DISTINCT = "distinct"


class CoefficientMismatchError(ValueError):
    """A run already steers at one coefficient and another was asked for."""


@dataclass
class CoefficientChoice:
    """A run's one steering coefficient and how it was chosen (``RUN/calibration/coefficient.json``).

    Attributes:
        coefficient: The absolute scale of the added decoder row.
        rule: ``"sweep"``, ``"fixed"`` or ``"paper"`` (see the module docstring).
        sae_id: The SAE's identity (:func:`~vis_steer_lens.saes.metadata.sae_identity`).
        hook_name: The SAE's hook.
        empty_image: The empty image steered.
        prompt_id: The prompt preset.
        multiple: With the sweep, the chosen multiple of ``patch_norm``.
        patch_norm: With the sweep, the hook's mean patch norm on the empty image.
        sample: With the sweep, the features it explained.
        pool: With the sweep, what they were sampled from (e.g. ``"427 live features"``).
        multiples: With the sweep, the multiples it tried.
        select_by: With the sweep, what chose the multiple: ``"distinct"`` (the distinct-answers
            rule) or a scorer's name.
        selected_scores: With a scorer, its mean over the sample's rows per multiple (in
            ``multiples``' order).
        held_out: With a scorer, whether the sample was drawn from live features other than
            those the calibrating command explained (False when no other feature was live).
    """

    coefficient: float
    rule: str
    sae_id: str
    hook_name: str
    empty_image: str
    prompt_id: str
    multiple: float | None = None
    patch_norm: float | None = None
    sample: list[int] = field(default_factory=list)
    pool: str | None = None
    multiples: list[float] = field(default_factory=list)
    select_by: str = DISTINCT
    selected_scores: list[float] = field(default_factory=list)
    held_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CoefficientChoice:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def describe(self) -> str:
        """One line: the coefficient and how it was chosen."""
        if self.rule == "sweep":
            by = (
                ""
                if self.select_by == DISTINCT
                else f" by mean {self.select_by} on {'held-out ' if self.held_out else ''}validation features"
            )
            return (
                f"{self.coefficient:.4g} ({self.multiple:g}x the mean patch norm {self.patch_norm:.4g} at "
                f"{self.hook_name} on the {self.empty_image} image), chosen by the sweep over "
                f"{', '.join(f'{m:g}x' for m in self.multiples)} on {len(self.sample)} of {self.pool}{by}"
            )
        if self.rule == "paper":
            return f"{self.coefficient:g} (the paper's fixed coefficient)"
        return f"{self.coefficient:g} (fixed)"


def coefficient_request(value: Any) -> float | str:
    """A requested coefficient: ``"auto"``, ``"paper"`` or a finite number.

    Raises:
        ValueError: For anything else.
    """
    from vis_steer_lens.explain.settings import check_coefficient

    if isinstance(value, str) and value in COEFFICIENT_RULES:
        return value
    return check_coefficient(value, "coefficient ('auto', 'paper' or a number)")


def calibrate_run(
    run: Any,
    vlm: Any,
    sae: Any,
    coefficient: float | str = "auto",
    *,
    prompt: str = "default",
    empty_image: str = "white",
    multiples: Sequence[float] = DEFAULT_MULTIPLES,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    min_frequency: float = 0.0,
    live: Sequence[int] | None = None,
    max_new_tokens: int = 48,
    batch_size: int | str = 32,
    seed: int = 0,
    progress: bool = True,
    log: Any = print,
    select_by: Any = None,
    explained: Sequence[int] | None = None,
) -> tuple[CoefficientChoice, Any]:
    """The run's steering coefficient: the one it already has, or one chosen now and kept.

    Args:
        run: A :class:`~vis_steer_lens.RunFolder`.
        vlm: The subject :class:`~vis_steer_lens.HookedVLM`.
        sae: The SAE whose features the run explains.
        coefficient: ``"auto"`` (the run's coefficient, or a sweep if it has none), ``"paper"``
            (:data:`PAPER_COEFFICIENT`) or a number. A run that already has a coefficient accepts
            ``"auto"`` or that same value, and refuses any other.
        prompt: The prompt preset (a run steers with one).
        empty_image: The empty image (a run steers one).
        multiples: The sweep's multiples of the mean patch norm.
        sample_size: Features the sweep explains at each multiple, sampled from the run's live
            features (from its mined statistics; from all features when nothing is mined).
        live: The run's live features, when the caller has the mined statistics in memory
            already (default: read from the run's mined folder; loading it is the costliest I/O
            of an explain).
        min_frequency: With mined statistics, the firing frequency (share of images) a feature
            needs to be live.
        max_new_tokens: The sweep's token budget (the explain's).
        batch_size: Rows per batch of the sweep.
        seed: Seeds the sample.
        progress: Show the sweep's progress bar.
        log: Where the one-line report goes (``None``: nowhere).
        select_by: ``None`` (the distinct-answers rule, the default) or a scorer choosing the
            multiple: a callable ``rows -> float`` over one multiple's sweep rows, higher is
            better, whose ``name`` attribute names it in the record
            (:func:`~vis_steer_lens.explain.sweep.scorer_selector` makes one from any
            per-explanation scorer). A run that already has a coefficient refuses another
            scorer than the one that chose it.
        explained: The features the calibrating command explains; with ``select_by`` the
            validation sample is drawn from the other live features (held out), as the paper's.

    Returns:
        ``(choice, explainer)``: the choice, and the sweep's
        :class:`~vis_steer_lens.SteeringExplainer` when a sweep ran now (set to the choice, its
        rows at the choice reused when those features are explained), else ``None``.

    Raises:
        CoefficientMismatchError: If the run already steers at another coefficient, or with
            another SAE, empty image or prompt.
    """
    from vis_steer_lens.saes.metadata import sae_identity
    from vis_steer_lens.saes.validation import check_sae_steers

    requested = coefficient_request(coefficient)
    hook_name = check_sae_steers(sae, vlm, method="steering (and its coefficient sweep)")
    prompt_id = prompt if isinstance(prompt, str) else prompt.prompt_id
    sae_id = sae_identity(sae)
    select_name = DISTINCT if select_by is None else str(getattr(select_by, "name", "custom"))
    existing = run.coefficient()
    if existing is not None:
        _check_same_setup(run, existing, sae_id, empty_image, prompt_id)
        if select_by is not None and existing.select_by != select_name:
            raise CoefficientMismatchError(
                f"Run {str(run.root)!r} steers at coefficient {existing.describe()}, chosen by "
                f"{existing.select_by!r}; every steering row of a run uses that one, so selecting by "
                f"{select_name!r} is refused. Drop --select-by, or start a new run folder."
            )
        wanted = PAPER_COEFFICIENT if requested == "paper" else requested
        if wanted != "auto" and float(wanted) != existing.coefficient:
            raise CoefficientMismatchError(
                f"Run {str(run.root)!r} steers at coefficient {existing.describe()}; every steering row of a run, "
                f"controls included, uses that one, so {coefficient!r} is refused. Drop --coefficient (or pass "
                f"{existing.coefficient:.6g}), or start a new run folder to steer at another coefficient."
            )
        if log is not None:
            log(f"Steering coefficient of this run: {existing.describe()} (from {run.coefficient_path}).")
        return existing, None

    common = dict(sae_id=sae_id, hook_name=hook_name, empty_image=empty_image, prompt_id=prompt_id)
    if requested != "auto":
        rule = "paper" if requested == "paper" else "fixed"
        choice = CoefficientChoice(
            coefficient=PAPER_COEFFICIENT if rule == "paper" else float(requested), rule=rule, **common
        )
        run.save_coefficient(choice)
        if log is not None:
            log(f"Steering coefficient of this run: {choice.describe()}; saved to {run.coefficient_path}.")
        return choice, None

    if live is None and run.has_mined():
        live = run.mined().live_features(min_frequency)
    if live is not None:
        pool = list(live)
        pool_text = f"{len(pool)} live features"
    else:
        pool = list(range(sae.cfg.d_sae))
        pool_text = f"all {len(pool)} features (nothing mined: `vis-steer-lens mine` first samples live ones)"
    if not pool:
        raise ValueError(
            f"No feature of the SAE fired in {run.mined_dir} (min frequency {min_frequency}); nothing to "
            "calibrate the steering coefficient on. Mine more images or lower --min-frequency."
        )
    held_out = False
    if select_by is not None and explained is not None:
        # Validation features held out from those this command explains, when any other is live.
        others = sorted(set(pool) - {int(f) for f in explained})
        if others:
            pool, held_out = others, True
    sample = sample_features(pool, sample_size, seed)
    explainer = SteeringExplainer(
        vlm,
        sae,
        coefficient="auto",
        prompt=prompt,
        empty_image=empty_image,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        sweep_multiples=tuple(multiples),
        seed=seed,
        select_by=select_by,
    )
    if log is not None:
        log(
            f"Choosing the run's steering coefficient: {len(multiples)} multiples x {len(sample)} of {pool_text} "
            f"({len(multiples) * len(sample)} steered rows, once per run)..."
        )
    table = explainer.calibrate(sample, progress=progress)
    chosen = table[table["chosen"]].iloc[0]
    choice = CoefficientChoice(
        coefficient=float(chosen["coefficient"]),
        rule="sweep",
        multiple=float(chosen["multiple"]),
        patch_norm=float(chosen["coefficient"]) / float(chosen["multiple"]),
        sample=sample,
        pool=pool_text.split(" (")[0],
        multiples=[float(m) for m in multiples],
        select_by=select_name,
        selected_scores=[float(v) for v in table["selected_score"]] if "selected_score" in table else [],
        held_out=held_out,
        **common,
    )
    explainer.coefficient = choice.coefficient
    run.save_coefficient(choice, table, sweep_figure(table, hook_name))
    if log is not None:
        column = "score" if select_by is None else "selected_score"
        label = "score" if select_by is None else f"mean {select_name}"
        lines = [
            f"  {m:>5g}x  {label} {s:.3f}{'  <- chosen' if c else ''}"
            for m, s, c in zip(table["multiple"], table[column], table["chosen"], strict=True)
        ]
        log("\n".join(lines))
        log(f"Steering coefficient of this run: {choice.describe()}; saved to {run.calibration_dir}.")
    return choice, explainer


def _check_same_setup(
    run: Any, choice: CoefficientChoice, sae_id: str, empty_image: str, prompt_id: str
) -> None:
    for what, have, want in (
        ("SAE", choice.sae_id, sae_id),
        ("empty image", choice.empty_image, empty_image),
        ("prompt", choice.prompt_id, prompt_id),
    ):
        if have != want:
            raise CoefficientMismatchError(
                f"Run {str(run.root)!r} was calibrated with {what} {have!r}, not {want!r}: its steering "
                f"coefficient belongs to that setup. Use the run's {what}, or start a new run folder."
            )


__all__ = [
    "COEFFICIENT_RULES",
    "DEFAULT_MULTIPLES",
    "DISTINCT",
    "DEFAULT_SAMPLE_SIZE",
    "PAPER_COEFFICIENT",
    "WORKING_SHARE",
    "CoefficientChoice",
    "CoefficientMismatchError",
    "calibrate_run",
    "coefficient_request",
    "sample_features",
    "sweep_figure",
    "sweep_table",
]
