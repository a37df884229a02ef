"""Argument validation shared by the whole package.

Every public entry point checks its inputs with these helpers so that a bad value
fails at once with a message naming the parameter, the value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Iterable


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """A failure probability must lie strictly inside (0, 1)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {alpha!r}")
    return value


def check_positive_int(value: int, name: str) -> int:
    """Sample counts and batch sizes are integers >= 1."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_positive_float(value: float, name: str) -> float:
    """Noise levels and step sizes are finite numbers > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from None
    if not (v > 0.0) or math.isinf(v):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_nonneg_float(value: float, name: str) -> float:
    """Weights of loss terms and attack radii are finite numbers >= 0 (0 switches the term off)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not (v >= 0.0) or math.isinf(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_choice(value: str, choices: Iterable[str], name: str) -> str:
    """A name (dataset, architecture, method, ...) must be one of the known ones."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value
