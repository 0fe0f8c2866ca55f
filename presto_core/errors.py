"""The one exception type a person can cause, and small validators that raise it."""

from __future__ import annotations

import math

import numpy as np


class PrestoError(ValueError):
    """Bad input or missing/corrupt weights: the message names the allowed range or the fix."""


def check_number(name: str, value, lo: float, hi: float, *, integer: bool = False) -> float:
    """Return ``value`` as a float (or int) if it lies in ``[lo, hi]``, else raise PrestoError.

    Rejects bools, NaN, inf and non-numbers with a message naming ``name`` and the range.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if not isinstance(value, np.generic) or isinstance(value, np.bool_):
            raise PrestoError(f"{name} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
        value = value.item()
    if not math.isfinite(value):
        raise PrestoError(f"{name} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
    if integer:
        if float(value) != int(value):
            raise PrestoError(f"{name} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
        value = int(value)
    if not lo <= value <= hi:
        raise PrestoError(f"{name} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
    return value
