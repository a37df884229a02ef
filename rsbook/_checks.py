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


def check_options(fn, options, what: str, flag: str = "option", passed=(), extra=(), meanings=None) -> None:
    """Refuse an option ``fn`` does not take, and name a required one that is missing.

    ``options`` are the user's ``{name: value}`` (e.g. ``--objective-arg``); ``passed`` are the
    parameters the caller supplies itself (``sigma``, ``n0``, ...), neither required of nor
    allowed to the user; ``extra`` are further names ``fn`` accepts through ``**kwargs``
    (e.g. the options of the attack an objective builds); ``meanings`` explains required
    options in the error. ``what`` names the method ("objective 'smoothadv'") and ``flag``
    the way the user gives options ("--objective-arg"), so the message speaks the caller's language.
    """
    import inspect

    params = [p for p in inspect.signature(fn).parameters.values()
              if p.name not in ("self", "cls") and p.name not in passed
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = [p.name for p in params] + [e for e in extra if e not in passed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(sorted(set(accepted))) or "none"
        raise ValueError(f"{what} takes no {flag} {', '.join(map(repr, unknown))}; the ones it takes: {takes}")
    missing = [p.name for p in params if p.default is p.empty and p.name not in options]
    if missing:
        meanings = meanings or {}
        parts = [f"{flag} {m}=VALUE" + (f" ({meanings[m]})" if m in meanings else "") for m in missing]
        raise ValueError(f"{what} needs " + " and ".join(parts))
