"""Each method's settings, with their units, and the one home of the method and direction names.

``coefficient`` means different things in the two steering methods: Steering adds
``coefficient * W_dec[f]`` (an absolute scale: with the unit-norm decoder rows of TopK SAEs, the
norm of the added vector), while the hybrid adds ``multiple * (the image's mean patch norm) *
W_dec[f]``. The settings classes say so in their field names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vis_steer_lens.choices import DIRECTIONS, DISPLAYS, EMPTY_IMAGES, METHODS


def check_coefficient(value: Any, what: str = "coefficient") -> float:
    """``value`` as a finite float.

    Raises:
        ValueError: For a non-number, NaN or infinity, naming ``what``.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}.")
    return number


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (not a bool).

    Raises:
        ValueError: Otherwise, naming the setting.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class SteeringSettings:
    """Settings of :class:`~vis_steer_lens.explain.SteeringExplainer` that are its own.

    Attributes:
        coefficient: Absolute scale of the added decoder row (``coefficient * W_dec[f]``): a
            number, a mapping feature → number, or ``"auto"`` (a calibration sweep over multiples
            of the hook's mean patch norm). Default ``"auto"``.
        empty_image: One of :data:`EMPTY_IMAGES`. Default ``"white"`` (the paper's).
        batch_size: Features decoded together. Default 32.
    """

    coefficient: float | str | Mapping[int, float] = "auto"
    empty_image: str = "white"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.coefficient, str):
            if self.coefficient != "auto":
                raise ValueError(
                    f"coefficient must be a number, a mapping or 'auto', got {self.coefficient!r}."
                )
        elif isinstance(self.coefficient, Mapping):
            checked = {
                int(f): check_coefficient(v, f"the coefficient of feature {f}")
                for f, v in self.coefficient.items()
            }
            object.__setattr__(self, "coefficient", checked)
        else:
            object.__setattr__(self, "coefficient", check_coefficient(self.coefficient))
        if self.empty_image not in EMPTY_IMAGES:
            raise ValueError(f"empty_image must be one of {EMPTY_IMAGES}, got {self.empty_image!r}.")


@dataclass(frozen=True)
class TopKSettings:
    """Settings of :class:`~vis_steer_lens.explain.TopKExplainer` that are its own.

    Attributes:
        k_images: Top images per prompt; ``None`` (the default): as many as were mined.
        display: ``"mask"`` (inactive patches masked) or ``"heatmap"``. Default ``"mask"``.
        batch_size: Features decoded together. Default 8.
    """

    k_images: int | None = None
    display: str = "mask"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.display not in DISPLAYS:
            raise ValueError(f"display must be one of {DISPLAYS}, got {self.display!r}.")
        if self.k_images is not None and self.k_images < 1:
            raise ValueError(f"k_images must be >= 1, got {self.k_images}.")


@dataclass(frozen=True)
class HybridSettings(TopKSettings):
    """Settings of :class:`~vis_steer_lens.explain.SteeringInformedTopKExplainer` that are its own.

    Attributes:
        patch_norm_multiple: The added vector is this multiple of each image's mean patch norm
            (at the hook) times the decoder row, at the patches where the feature is active.
            Default 1.0.
    """

    patch_norm_multiple: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(
            self, "patch_norm_multiple", check_coefficient(self.patch_norm_multiple, "patch_norm_multiple")
        )


#: The settings class of each method.
SETTINGS = {"steering": SteeringSettings, "topk": TopKSettings, "hybrid": HybridSettings}


def settings_for(method: str, **values: Any) -> SteeringSettings | TopKSettings | HybridSettings:
    """The settings of ``method`` from loose keyword values, each method taking what is its own.

    ``coefficient`` is Steering's absolute scale; for the hybrid it is read as
    ``patch_norm_multiple``, with ``"auto"`` (which the hybrid has no sweep for) meaning its
    default. Values that do not apply to ``method`` are ignored.

    Raises:
        ValueError: For an unknown method or a bad value.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {list(METHODS)}.")
    values = {k: v for k, v in values.items() if v is not None}
    if method == "hybrid" and "coefficient" in values:
        coefficient = values.pop("coefficient")
        if coefficient != "auto":
            values.setdefault("patch_norm_multiple", coefficient)
    cls = SETTINGS[method]
    fields = set(asdict(cls()).keys())
    return cls(**{k: v for k, v in values.items() if k in fields})


__all__ = [
    "DIRECTIONS",
    "DISPLAYS",
    "EMPTY_IMAGES",
    "METHODS",
    "SETTINGS",
    "HybridSettings",
    "SteeringSettings",
    "TopKSettings",
    "check_coefficient",
    "settings_for",
]
