"""Certify a whole dataset into a tab-separated log, one row per example as it finishes.

The log has the columns of the reference implementations of the papers (``idx label
predict radius correct time``) followed by what is needed to recompute or audit a
certificate (``count n p_lower n0``). Runs are resumable (a rerun skips the indices
already in the log and repairs a half-written last line) and shardable (``shard=(i, k)``
takes every k-th selected index starting at i), and each example's noise is seeded from
its index, so an interrupted, resumed or sharded run gives the same rows as one clean run.
Beside each log, ``<log>.settings.json`` records what made it (:func:`certify_dataset`), so a
resume, a merge or a status query with other settings is refused instead of mixing rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch

from rsbook._checks import check_alpha, check_positive_int
from rsbook.smooth import Certificate, Smooth
from rsbook.utils import progress_bar

__all__ = ["LOG_COLUMNS", "CERTIFIERS", "register_certifier", "check_certifier_options", "certify_dataset", "settings_path", "read_settings", "model_digest",
           "settings_differences", "check_same_run", "check_output_file", "merge_logs", "select_indices", "parse_shard", "finished_rows",
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


#: version of the settings record written beside every certification log
SETTINGS_FORMAT = 1
#: which rows a run certifies (may differ between shards of one run); everything else in a
#: log's settings decides what a row *is*, and must be equal for rows to belong together
SELECTION_KEYS = ("skip", "max_examples", "shard")


def settings_path(log: str | os.PathLike) -> Path:
    """Where the settings of certification log ``log`` are recorded: ``<log>.settings.json`` beside it."""
    log = Path(log)
    return log.with_name(log.name + ".settings.json")


def read_settings(log: str | os.PathLike) -> dict | None:
    """The recorded ``{"settings", "selection", "info"}`` of ``log``; ``None`` for a log written without one."""
    path = settings_path(log)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"settings record {path} is not valid JSON ({err}); it belongs to {log}") from None
    if not isinstance(record, dict) or "settings" not in record:
        raise ValueError(f"{path} is not a certification settings record (no 'settings' key)")
    return record


def _plain(value):
    """``value`` as JSON reads it back (tuples become lists, objects their repr), for comparisons."""
    return json.loads(json.dumps(value, default=repr, sort_keys=True))


def settings_differences(recorded: Mapping, wanted: Mapping) -> list[str]:
    """``["n: 1000 (recorded) vs 500", ...]`` for every key whose value differs (missing counts as differing)."""
    recorded, wanted = _plain(dict(recorded)), _plain(dict(wanted))
    return [f"{key}: {recorded.get(key, '(not recorded)')!r} in the log vs {wanted.get(key, '(not given)')!r} now"
            for key in sorted(set(recorded) | set(wanted)) if recorded.get(key) != wanted.get(key)]


def _write_settings(log: Path, record: dict) -> None:
    path = settings_path(log)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(record), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (names, dtypes, shapes, bytes): the identity of the classifier a log certifies."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_resume(out: Path, settings: dict, selection: dict, has_rows: bool, unrecorded: str) -> None:
    """Refuse to append to ``out`` when its rows were made under other settings (or nobody can tell)."""
    record = read_settings(out)
    if record is None:
        if has_rows and unrecorded != "adopt":
            raise ValueError(f"log {out} has rows but no settings record ({settings_path(out).name}): it was "
                             "written by an older rsbook, so nothing can tell whether its rows were made with "
                             "these settings. Certify into another file (or move this one away)")
        return
    diff = settings_differences(record["settings"], settings)
    if diff:
        raise ValueError(f"log {out} was made with other settings; appending would mix them. Differences: "
                         + "; ".join(diff) + ". Certify into another file (or delete this one)")
    old = _plain(record.get("selection", {}))
    new = _plain(selection)
    changed = [k for k in ("skip", "shard") if old.get(k) != new.get(k)]
    if changed:
        raise ValueError(f"log {out} holds the rows of " + ", ".join(f"{k}={old.get(k)!r}" for k in changed)
                         + "; this run asks " + ", ".join(f"{k}={new.get(k)!r}" for k in changed)
                         + ": certify into another file (a larger --max extends a log; other selections do not)")
    if old.get("max_examples") is None and new.get("max_examples") is not None:
        # certified rows stay valid; the record keeps the larger selection
        selection["max_examples"] = None
    elif new.get("max_examples") is not None and old.get("max_examples") is not None:
        selection["max_examples"] = max(old["max_examples"], new["max_examples"])


def certify_dataset(smooth: Smooth, dataset, n0: int, n: int, alpha: float, out: str | os.PathLike,
                    skip: int = 1, max_examples: int | None = None, shard=None, batch_size: int = 1000,
                    seed: int = 0, certify_fn: Callable[[torch.Tensor], Certificate] | None = None,
                    extra_columns: Iterable[str] = (), progress: bool = True, settings: Mapping | None = None,
                    info: Mapping | None = None, unrecorded: str = "refuse") -> Path:
    """Certify ``dataset`` with ``smooth`` and append one log row per example to ``out``.

    ``certify_fn(x) -> Certificate`` replaces plain CERTIFY (``smooth.certify(x, n0, n,
    alpha, batch_size)``) so other certifiers (e.g. ISS) write the same log; attributes of
    the certificate named in ``extra_columns`` are appended as further columns.
    Returns the path of the log.

    The log knows what made it: ``<out>.settings.json`` records ``n0, n, alpha, seed``, the
    columns, the dataset's length, the classifier (:func:`model_digest`), the noise and the
    precision, and the caller's ``settings`` (dataset and split, certifier and its options,
    ...): these decide what a row is. It also records the
    selection (``skip``, ``max_examples``, ``shard``), which decides which rows there are.
    A rerun resumes only when the settings are equal and the selection is the same or
    extends ``max_examples``; otherwise it raises ``ValueError`` naming the differences,
    before anything is written. ``info`` is recorded but never compared (paths, batch
    size). A log with rows but no record (older rsbook) is refused unless
    ``unrecorded="adopt"`` (the experiment helper, whose log names already hash every setting).
    """
    n0, n = check_positive_int(n0, "n0"), check_positive_int(n, "n")
    alpha = check_alpha(alpha)
    if unrecorded not in ("refuse", "adopt"):
        raise ValueError(f"unrecorded must be 'refuse' or 'adopt', got {unrecorded!r}")
    extra_columns = tuple(extra_columns)
    columns = LOG_COLUMNS + extra_columns
    out = Path(out)
    check_output_file(out, "out")
    indices = select_indices(len(dataset), skip, max_examples, shard)
    record = {"format": SETTINGS_FORMAT, "settings": {"n0": n0, "n": n, "alpha": alpha, "seed": seed,
                                                       "columns": list(columns), "length": len(dataset),
                                                       "model": model_digest(smooth.base_classifier),
                                                       "noise": repr(smooth.noise), "precision": smooth.precision,
                                                       **dict(settings or {})},
              "selection": {"skip": skip, "max_examples": max_examples, "shard": parse_shard(shard)},
              "info": {"batch_size": batch_size, **dict(info or {})}}
    finished = finished_rows(out, columns)
    _check_resume(out, record["settings"], record["selection"], bool(finished), unrecorded)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_settings(out, record)
    done = {int(row[0]) for row in finished}
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


def check_output_file(path: str | os.PathLike, option: str = "out") -> Path:
    """Refuse an output path that is a directory or lies below a file (before any work starts)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file path inside it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path} cannot be created: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"{option} {path} cannot be created: no permission to write in {parent}")
            break
    return path


def _constant(frame, column):
    values = frame[column].unique() if column in frame.columns else []
    return values[0] if len(values) == 1 else None


def check_same_run(paths: Sequence[str | os.PathLike], what: str = "merge") -> dict | None:
    """The common settings record of the shard logs ``paths``, or ``ValueError`` naming what differs.

    Logs without a record (older rsbook, the papers' reference logs) are accepted only all
    together, and then a per-log constant ``n`` or ``n0`` column must agree across them.
    Returns the first record (``None`` when no log has one).
    """
    from rsbook.analysis import read_log

    records = [read_settings(p) for p in paths]
    have = [p for p, r in zip(paths, records) if r is not None]
    if have and len(have) < len(paths):
        lacking = [str(p) for p, r in zip(paths, records) if r is None]
        raise ValueError(f"cannot {what}: {', '.join(lacking)} ha{'s' if len(lacking) == 1 else 've'} no settings "
                         f"record, {have[0]} has one, so nothing can tell whether they belong to one run")
    if not have:
        frames = [read_log(p) for p in paths]
        for column in ("n", "n0"):
            values = {str(p): _constant(f, column) for p, f in zip(paths, frames)}
            if None not in values.values() and len(set(values.values())) > 1:
                raise ValueError(f"cannot {what}: the logs were certified with different {column}: "
                                 + ", ".join(f"{p}: {v}" for p, v in values.items()))
        return None
    first = records[0]
    for p, r in zip(paths[1:], records[1:]):
        diff = settings_differences(first["settings"], r["settings"])
        if diff:
            raise ValueError(f"cannot {what}: {p} was made with other settings than {paths[0]}: " + "; ".join(
                d.replace(" in the log vs ", f" in {paths[0]} vs ").replace(" now", f" in {p}") for d in diff))
        for key in ("skip", "max_examples"):
            a, b = first["selection"].get(key), r["selection"].get(key)
            if a != b:
                raise ValueError(f"cannot {what}: {paths[0]} selects {key}={a!r}, {p} {key}={b!r}")
    shards = [tuple(r["selection"]["shard"]) if r["selection"].get("shard") else None for r in records]
    if len(paths) > 1 and None not in shards and len(set(shards)) < len(shards):
        raise ValueError(f"cannot {what}: two logs are the same shard ({sorted(shards)})")
    return first


def merge_logs(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge shard logs into one log sorted by ``idx``.

    Refuses overlapping shards, logs made with other settings (:func:`check_same_run`) and
    logs of different columns; the merged log gets the shards' settings record.
    """
    from rsbook.analysis import read_log

    paths = list(paths)
    if not paths:
        raise ValueError("merge_logs needs at least one log")
    out = check_output_file(out, "out")
    if any(Path(p).resolve() == out.resolve() for p in paths):
        raise ValueError(f"out {out} is also one of the logs to merge; give another output file")
    record = check_same_run(paths, "merge")
    frames = [read_log(p) for p in paths]
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
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:
        fh.write("\t".join(header) + "\n")
        for row in merged.itertuples(index=False):
            fh.write(format_row(v.item() if hasattr(v, "item") else v for v in row))
    if record is not None:
        shards = [read_settings(p)["selection"].get("shard") for p in paths]
        if None in shards:
            merged_shard = None
        else:  # the whole run when every one of the k slices is here
            whole = {tuple(sh) for sh in shards} == {(i, shards[0][1]) for i in range(shards[0][1])}
            merged_shard = None if whole else shards
        selection = dict(record["selection"], shard=merged_shard)
        _write_settings(out, dict(record, selection=selection, info=dict(record.get("info", {}),
                                                                         merged_from=[str(p) for p in paths])))
    return out
