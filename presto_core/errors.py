"""The one exception type a person can cause, and small validators that raise it."""

from __future__ import annotations

import math

import numpy as np


class PrestoError(ValueError):
    """Bad input or missing/corrupt weights: the message names the allowed range or the fix."""


def shown(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting untrusted input in a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_choice(name: str, value, choices) -> str:
    """Return ``value`` if it is one of ``choices`` (strings), else raise PrestoError listing them.
    Anything but a string (a list, a number, None) is refused the same way, never looked up."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise PrestoError(f"{name} must be one of {choices}, got {shown(value)}")
    return value


def check_bool(name: str, value) -> bool:
    """Return ``value`` as a bool if it is true or false (Python or numpy), else raise PrestoError."""
    if not isinstance(value, (bool, np.bool_)):
        raise PrestoError(f"{name} must be true or false, got {shown(value)}")
    return bool(value)


def check_text(name: str, value, max_chars: int, example: str) -> str:
    """Return ``value`` stripped if it is non-empty text of at most ``max_chars`` characters that
    UTF-8 can encode (no lone surrogates), else raise PrestoError."""
    if not isinstance(value, str) or not value.strip():
        raise PrestoError(f"{name} must be a non-empty text, e.g. {example!r}")
    if len(value) > max_chars:
        raise PrestoError(f"{name} must be 1 to {max_chars} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PrestoError(f"{name} has an invalid character at position {e.start} ({shown(value[e.start])}, a "
                          "lone UTF-16 surrogate); send plain UTF-8 text") from None
    return value.strip()


def check_number(name: str, value, lo: float, hi: float, *, integer: bool = False) -> float:
    """Return ``value`` as a float (or int) if it lies in ``[lo, hi]``, else raise PrestoError.

    Rejects bools, NaN, inf and non-numbers with a message naming ``name`` and the range.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if not isinstance(value, np.generic) or isinstance(value, np.bool_):
            raise PrestoError(f"{name} must be {kind} in [{lo:g}, {hi:g}], got {shown(value)}")
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
