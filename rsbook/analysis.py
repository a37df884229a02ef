"""Reading certification logs and summarising them the way the papers do.

``read_log`` accepts our logs and those written by the papers' reference code (same
leading columns; ``time`` as float seconds or ``H:MM:SS.ffffff``). ``acr`` is the average
certified radius of Zhai et al. (2020) (wrong or abstained rows count 0),
``certified_accuracy`` the "approximate certified accuracy" of Cohen et al. (2019)
(fraction of all rows that are correct with radius >= r), ``envelope`` the best model per
radius. ``paper_table`` returns the numbers the papers report, with their citation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["read_log", "acr", "certified_accuracy", "at_cap", "envelope", "paper_table", "available_paper_tables",
           "summary_table", "summary_over_seeds", "format_over_seeds"]

_REQUIRED = ("idx", "label", "predict", "radius", "correct")
_PAPER_DATA = Path(__file__).with_name("paper_data")


def _parse_time(value) -> float:
    if isinstance(value, (int, float, np.number)):
        return float(value)
    text = str(value).strip()
    if ":" not in text:
        return float(text)
    parts = text.split(":")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    # "1 day, 2:03:04" style is not written by the reference code; H may exceed 24 though.
    return seconds


def read_log(path: str | os.PathLike) -> pd.DataFrame:
    """A certification log (tab-separated, header row) as a DataFrame; ``time`` in float seconds.

    A last line without its newline is what a log looks like while certify is still writing
    it: it is left out, with a warning (certify's own resume truncates it the same way).
    A log that lists an index twice is refused, as :func:`rsbook.certify.merge_logs` refuses it.
    """
    import io
    import warnings

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"certification log not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a certification log (give the .tsv files in it)")
    text = path.read_text()
    if text and not text.endswith("\n"):
        complete = text[: text.rfind("\n") + 1]
        if complete:  # a header alone, half-written, is not a log at all (caught below)
            warnings.warn(f"{path}: ignoring its last line, which has no newline yet (still being written?): "
                          f"{text[len(complete):][:60]!r}", stacklevel=2)
            text = complete
    if not text.strip():
        raise ValueError(f"{path} is empty, not a certification log")
    frame = pd.read_csv(io.StringIO(text), sep="\t", dtype={"time": str} if _has_time(text) else None)
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a certification log: missing columns {missing} "
                         f"(expected at least {list(_REQUIRED)})")
    repeated = frame["idx"][frame["idx"].duplicated()]
    if len(repeated):
        raise ValueError(f"{path} lists index {int(repeated.iloc[0])} more than once ({len(repeated)} repeated "
                         "rows): rows of two runs appended to one file? Certify into separate files and merge them")
    if "time" in frame.columns:
        frame["time"] = frame["time"].map(_parse_time)
    return frame


def _has_time(text: str) -> bool:
    return "time" in text.split("\n", 1)[0].split("\t")


def _frame(log) -> pd.DataFrame:
    return log if isinstance(log, pd.DataFrame) else read_log(log)


def acr(log) -> float:
    """Average certified radius over all rows; incorrect or abstained rows contribute 0."""
    frame = _frame(log)
    if len(frame) == 0:
        raise ValueError("cannot compute ACR of an empty log")
    return float((frame["radius"] * (frame["correct"] == 1)).mean())


def at_cap(log) -> np.ndarray:
    """Per example, in ``idx`` order: certified correctly with every one of its ``n`` votes for the class.

    Such a certificate sits exactly at the cap ``sigma Phi^-1(alpha^(1/n))`` of its budget
    (:func:`rsbook.stats.radius_cap`): its true radius is unknown, only that it is at least the
    cap, so a mean radius over such examples is a truncated (censored) mean.
    """
    frame = _frame(log).sort_values("idx")
    return ((frame["count"] == frame["n"]) & (frame["correct"] == 1)).to_numpy()


def certified_accuracy(log, radii: Sequence[float] | float) -> np.ndarray | float:
    """Fraction of all rows that are correct and certified at radius >= r, for each r."""
    frame = _frame(log)
    if len(frame) == 0:
        raise ValueError("cannot compute certified accuracy of an empty log")
    correct = frame["correct"].to_numpy() == 1
    radius = frame["radius"].to_numpy(dtype=float)
    r = np.atleast_1d(np.asarray(radii, dtype=float))
    acc = (correct[None, :] & (radius[None, :] >= r[:, None])).mean(axis=1)
    return float(acc[0]) if np.ndim(radii) == 0 else acc


def envelope(logs: Iterable | Mapping, radii: Sequence[float]) -> np.ndarray:
    """Upper envelope: for each radius the best certified accuracy over the given models' logs."""
    items = logs.values() if isinstance(logs, Mapping) else logs
    curves = [certified_accuracy(log, radii) for log in items]
    if not curves:
        raise ValueError("envelope needs at least one log")
    return np.max(np.vstack(curves), axis=0)


def summary_table(logs: Mapping[str, object], radii: Sequence[float]) -> pd.DataFrame:
    """One row per named log: ACR and certified accuracy (%) at each radius."""
    rows = []
    for name, log in logs.items():
        frame = _frame(log)
        row = {"model": name, "ACR": acr(frame)}
        row.update({f"{r:g}": 100 * a for r, a in zip(radii, certified_accuracy(frame, list(radii)))})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def summary_over_seeds(logs: Mapping[str, Sequence[object]], radii: Sequence[float]) -> pd.DataFrame:
    """One row per named method: mean over its seeds' logs and the standard error across seeds.

    ``logs`` maps a label to the logs of one configuration trained with different seeds
    (certified on the same test images). Columns: ``seeds``, then for ACR and for certified
    accuracy (%) at each radius the mean (``ACR``, ``"0.5"``, ...) and its seed-level
    standard error ``sd / sqrt(S)`` (``"ACR SE"``, ``"0.5 SE"``, ...). With one seed the SE
    is NaN: one network says nothing about the spread of the method.
    """
    rows = []
    for name, seed_logs in logs.items():
        frames = [_frame(log) for log in seed_logs]
        if not frames:
            raise ValueError(f"{name!r} has no logs")
        values = np.array([[acr(f), *(100 * certified_accuracy(f, list(radii)))] for f in frames])
        mean = values.mean(axis=0)
        se = values.std(axis=0, ddof=1) / np.sqrt(len(frames)) if len(frames) > 1 else np.full(len(mean), np.nan)
        row = {"model": name, "seeds": len(frames)}
        for key, m, e in zip(["ACR", *(f"{r:g}" for r in radii)], mean, se):
            row[key], row[f"{key} SE"] = m, e
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def format_over_seeds(table: pd.DataFrame, digits: int = 1, acr_digits: int = 3) -> pd.DataFrame:
    """:func:`summary_over_seeds` as ``"mean ± SE"`` strings, one column per quantity, for printing."""
    out = pd.DataFrame(index=table.index)
    out["seeds"] = table["seeds"]
    for col in [c for c in table.columns if c != "seeds" and not c.endswith(" SE")]:
        d = acr_digits if col == "ACR" else digits
        out[col] = [f"{m:.{d}f}" if np.isnan(e) else f"{m:.{d}f} ± {e:.{d}f}"
                    for m, e in zip(table[col], table[f"{col} SE"])]
    return out


def available_paper_tables() -> list[str]:
    """Names accepted by :func:`paper_table`."""
    return sorted(p.stem for p in _PAPER_DATA.glob("*.csv"))


def paper_table(name: str) -> pd.DataFrame:
    """A table of numbers reported in one of the papers, as data.

    The CSV files in ``rsbook/paper_data`` start with ``#`` lines giving the source
    (paper, table) and notes; these are returned in ``frame.attrs["citation"]``.
    Certified accuracies are in percent, radii are the column names.
    """
    path = _PAPER_DATA / f"{name}.csv"
    if not path.exists():
        raise ValueError(f"unknown paper table {name!r}; valid choices: {', '.join(available_paper_tables())}")
    with open(path) as fh:
        comments = [line[1:].strip() for line in fh if line.startswith("#")]
    frame = pd.read_csv(path, comment="#")
    frame.attrs["citation"] = " ".join(comments)
    return frame
