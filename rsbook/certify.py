"""Certify a whole dataset into a tab-separated log, one row per example as it finishes.

The log has the columns of the reference implementations of the papers (``idx label
predict radius correct time``) followed by what is needed to recompute or audit a
certificate (``count n p_lower n0``). Runs are resumable (a rerun skips the indices
already in the log and repairs a half-written last line) and shardable (``shard=(i, k)``
takes every k-th selected index starting at i), and each example's noise is seeded from
its index, so an interrupted, resumed or sharded run gives the same rows as one clean run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from rsbook._checks import check_alpha, check_positive_int
from rsbook.smooth import Certificate, Smooth
from rsbook.utils import progress_bar

__all__ = ["LOG_COLUMNS", "CERTIFIERS", "register_certifier", "check_certifier_options", "certify_dataset", "merge_logs", "select_indices", "parse_shard", "finished_rows",
           "format_row"]

LOG_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "count", "n", "p_lower", "n0")

#: certifiers by name: ``name -> (fn, extra_columns)`` with
#: ``fn(smooth, x, *, n0, n, alpha, batch_size, **kwargs) -> Certificate``; the extra columns
#: are attributes of the returned certificate logged after :data:`LOG_COLUMNS`
CERTIFIERS: dict[str, tuple[Callable, tuple[str, ...]]] = {}


def register_certifier(name: str, extra_columns: Iterable[str] = ()):
    """Function decorator: make a certifier reachable by name (experiment helper, command line)."""
    def register(fn):
        if name in CERTIFIERS and CERTIFIERS[name][0] is not fn:
            raise ValueError(f"certifier name {name!r} is already registered")
        CERTIFIERS[name] = (fn, tuple(extra_columns))
        return fn

    return register


#: what every certifier is given by :func:`certify_dataset`'s caller (not user options)
CERTIFIER_ARGUMENTS = ("smooth", "x", "n0", "n", "alpha", "batch_size")


def check_certifier_options(name: str, options: dict, option_flag: str = "option") -> None:
    """Refuse options the registered certifier ``name`` does not take (``ValueError`` listing the ones it does)."""
    from rsbook._checks import check_choice, check_options

    check_choice(name, CERTIFIERS, "certifier")
    check_options(CERTIFIERS[name][0], options, f"certifier {name!r}", option_flag, passed=CERTIFIER_ARGUMENTS)


@register_certifier("certify")
def _certify(smooth: Smooth, x: torch.Tensor, *, n0: int, n: int, alpha: float, batch_size: int) -> Certificate:
    """Cohen et al.'s CERTIFY (:meth:`rsbook.smooth.Smooth.certify`)."""
    return smooth.certify(x, n0, n, alpha, batch_size)


def parse_shard(shard) -> tuple[int, int] | None:
    """``None``, ``(i, k)`` or the string ``"i/k"`` -> ``(i, k)`` with ``0 <= i < k``."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            i, k = (int(s) for s in shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like 'i/k' (e.g. '0/4'), got {shard!r}") from None
    else:
        i, k = shard
    if not (int(k) >= 1 and 0 <= int(i) < int(k)):
        raise ValueError(f"shard=(i, k) needs k >= 1 and 0 <= i < k, got {shard!r}")
    return int(i), int(k)


def select_indices(length: int, skip: int = 1, max_examples: int | None = None, shard=None) -> list[int]:
    """Dataset indices a run certifies: every ``skip``-th, at most ``max_examples``, then the shard's slice."""
    skip = check_positive_int(skip, "skip")
    indices = list(range(0, length, skip))
    if max_examples is not None:
        indices = indices[: check_positive_int(max_examples, "max_examples")]
    shard = parse_shard(shard)
    if shard is not None:
        i, k = shard
        indices = indices[i::k]
    return indices


def finished_rows(path: str | os.PathLike, columns: Sequence[str]) -> list[list[str]]:
    """The complete rows of a resumable tab-separated log, as lists of strings.

    Truncates a trailing half-written row (left by a kill during a write) and refuses a
    log whose header differs from ``columns``. A missing or empty file has no rows.
    Shared by every resumable log in rsbook (certification, empirical robustness).
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            fh.seek(cut)
            fh.truncate()
            data = data[:cut]
    lines = data.decode().splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    if header != list(columns):
        raise ValueError(f"existing log {path} has columns {header}, expected {list(columns)}; "
                         "use another output path or delete the file")
    return [line.split("\t") for line in lines[1:] if line.strip()]


def format_row(values) -> str:
    """One log line (with its newline) in the format :func:`finished_rows` reads back."""
    return "\t".join(_format(v) for v in values) + "\n"


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if not value.is_integer() or abs(value) > 1e15 else f"{value:.1f}"
    return str(value)


def certify_dataset(smooth: Smooth, dataset, n0: int, n: int, alpha: float, out: str | os.PathLike,
                    skip: int = 1, max_examples: int | None = None, shard=None, batch_size: int = 1000,
                    seed: int = 0, certify_fn: Callable[[torch.Tensor], Certificate] | None = None,
                    extra_columns: Iterable[str] = (), progress: bool = True) -> Path:
    """Certify ``dataset`` with ``smooth`` and append one log row per example to ``out``.

    ``certify_fn(x) -> Certificate`` replaces plain CERTIFY (``smooth.certify(x, n0, n,
    alpha, batch_size)``) so other certifiers (e.g. ISS) write the same log; attributes of
    the certificate named in ``extra_columns`` are appended as further columns.
    Returns the path of the log.
    """
    n0, n = check_positive_int(n0, "n0"), check_positive_int(n, "n")
    alpha = check_alpha(alpha)
    extra_columns = tuple(extra_columns)
    columns = LOG_COLUMNS + extra_columns
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    indices = select_indices(len(dataset), skip, max_examples, shard)
    done = {int(row[0]) for row in finished_rows(out, columns)}
    todo = [i for i in indices if i not in done]
    if certify_fn is None:
        def certify_fn(x):
            return smooth.certify(x, n0, n, alpha, batch_size)
    with open(out, "a", buffering=1) as log:
        if not done and out.stat().st_size == 0:
            log.write("\t".join(columns) + "\n")
        for idx in progress_bar(todo, desc=f"certify {out.name}", disable=not progress,
                        initial=len(indices) - len(todo), total=len(indices)):
            x, label = dataset[idx]
            label = int(label)
            smooth.reseed(seed * 1_000_003 + idx)
            start = time.perf_counter()
            cert = certify_fn(x)
            elapsed = time.perf_counter() - start
            row = [idx, label, cert.prediction, float(cert.radius), int(cert.prediction == label),
                   round(elapsed, 4), cert.count, cert.n, float(cert.p_lower), cert.n0]
            row += [getattr(cert, c) for c in extra_columns]
            log.write(format_row(row))
            log.flush()
    return out


def merge_logs(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge shard logs into one log sorted by ``idx``; refuses overlapping shards."""
    from rsbook.analysis import read_log

    frames = [read_log(p) for p in paths]
    if not frames:
        raise ValueError("merge_logs needs at least one log")
    header = list(frames[0].columns)
    for p, f in zip(paths, frames):
        if list(f.columns) != header:
            raise ValueError(f"log {p} has columns {list(f.columns)}, expected {header}")
    import pandas as pd

    merged = pd.concat(frames, ignore_index=True)
    dup = merged["idx"][merged["idx"].duplicated()]
    if len(dup):
        raise ValueError(f"shard logs overlap: index {int(dup.iloc[0])} appears more than once")
    merged = merged.sort_values("idx")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:
        fh.write("\t".join(header) + "\n")
        for row in merged.itertuples(index=False):
            fh.write(format_row(v.item() if hasattr(v, "item") else v for v in row))
    return out
