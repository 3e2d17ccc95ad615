"""Labels of explanation methods in tables and dashboards; the explainers own them."""

from __future__ import annotations

import numpy as np


def method_label(method: str, direction: str | None = "sae") -> str:
    """Table label of an explanation method: the method, plus the control direction if not the SAE's.

    Example: ``method_label("steering", "random_norm_matched") == "steering (random direction)"``.
    """
    if direction is None or (isinstance(direction, float) and np.isnan(direction)) or direction == "sae":
        return str(method)
    names = {"random_norm_matched": "random direction", "permuted": "permuted direction"}
    return f"{method} ({names.get(direction, str(direction) + ' direction')})"


__all__ = ["method_label"]
