"""The figures the chapters show: certified-accuracy curves, ACR bars, radius histograms,
and decision regions of a 2-D classifier with certified-radius circles.

Convention: our curves are solid, the papers' reported numbers dashed with markers.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rsbook.analysis import acr, certified_accuracy, read_log

__all__ = ["draw_radius_cap", "plot_certified_accuracy", "plot_acr_bars", "plot_radius_histogram", "plot_decision_regions",
           "paper_curve"]


def _frame(log):
    return log if isinstance(log, pd.DataFrame) else read_log(log)


def paper_curve(table: pd.DataFrame, row: int | None = None, **match) -> tuple[np.ndarray, np.ndarray]:
    """``(radii, accuracy in [0, 1])`` from a :func:`rsbook.analysis.paper_table` row.

    Select the row by position or by column values, e.g. ``paper_curve(t, sigma=0.5)``.
    """
    sel = table
    for key, value in match.items():
        sel = sel[np.isclose(sel[key], value)] if isinstance(value, float) else sel[sel[key] == value]
    if row is not None:
        sel = sel.iloc[[row]]
    if len(sel) != 1:
        raise ValueError(f"paper_curve needs exactly one row, the selection {match or row} gives {len(sel)}")
    radius_cols = [c for c in table.columns if _is_number(c)]
    radii = np.array([float(c) for c in radius_cols])
    return radii, sel[radius_cols].to_numpy(dtype=float)[0] / 100.0


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def draw_radius_cap(ax, cap: float, color: str = "0.35", label: str | None = "cap"):
    """Mark the certification cap ``sigma Phi^-1(alpha^(1/n))`` (:func:`rsbook.stats.radius_cap`) on ``ax``.

    A dotted vertical line at the cap and a light band from 0.9 x cap to it: beyond the cap
    every curve is 0 whatever the model, and within 10% of it the budget, not the model,
    shapes the curve, so no claim is read there. ``label=None`` keeps it out of the legend.
    """
    ax.axvline(cap, color=color, ls=":", lw=1.2, label=None if label is None else f"{label} {cap:.2f}")
    ax.axvspan(0.9 * cap, cap, color=color, alpha=0.12, lw=0)
    return ax


def plot_certified_accuracy(logs: Mapping[str, object], paper: Mapping[str, tuple] | None = None,
                            max_radius: float | None = None, ax=None, title: str | None = None,
                            colors: Mapping[str, str] | None = None, caps: Mapping[str, float] | None = None):
    """Certified accuracy vs radius: one solid line per log, dashed lines for ``paper`` curves.

    ``logs`` maps a label to a log (path or DataFrame), to a precomputed ``(radii, acc)``, or
    to a *list* of logs (one configuration, several training seeds): drawn as the mean curve
    with a band of ± one standard error across seeds;
    ``paper`` maps a label to ``(radii, acc)`` with accuracy in [0, 1]. ``caps`` maps a
    label of ``logs`` to the certification cap of its budget, drawn in its colour
    (:func:`draw_radius_cap`); equal caps are drawn once.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    colors = dict(colors or {})
    frames = {k: v for k, v in logs.items() if not isinstance(v, (tuple, list))}
    for label, v in logs.items():
        if isinstance(v, list):
            frames.update({f"{label}#{i}": log for i, log in enumerate(v)})
    if max_radius is None:  # far enough to show every curve and every cap
        radii_seen = [_frame(v)["radius"].max() for v in frames.values()] or [1.0]
        radii_seen += [float(np.max(v[0])) for v in logs.values() if isinstance(v, tuple)]
        max_radius = 1.05 * max(max(radii_seen), 0.1, *(caps or {}).values())
    grid = np.linspace(0, max_radius, 400)
    for i, (label, log) in enumerate(logs.items()):
        color = colors.get(label, f"C{i}")
        if isinstance(log, tuple):
            ax.plot(*log, color=color, lw=2, label=label)
        elif isinstance(log, list):
            curves = np.array([certified_accuracy(_frame(one), grid) for one in log])
            mean = curves.mean(axis=0)
            ax.plot(grid, mean, color=color, lw=2, label=f"{label} ({len(log)} seeds)" if len(log) > 1 else label)
            if len(log) > 1:
                se = curves.std(axis=0, ddof=1) / np.sqrt(len(log))
                ax.fill_between(grid, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        else:
            ax.plot(grid, certified_accuracy(_frame(log), grid), color=color, lw=2, label=label)
    for j, (label, (radii, acc)) in enumerate((paper or {}).items()):
        ax.plot(radii, acc, ls="--", marker="o", ms=4, color=colors.get(label, f"C{len(logs) + j}"),
                label=f"{label} (paper)")
    ax.set_xlabel(r"$\ell_2$ radius $r$")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, max_radius)
    drawn = set()
    for i, (label, cap) in enumerate((caps or {}).items()):
        if round(cap, 3) in drawn:
            continue
        drawn.add(round(cap, 3))
        names = [k for k, c in caps.items() if round(c, 3) == round(cap, 3)]
        one_color = len(names) == 1 and label in logs
        draw_radius_cap(ax, cap, color=colors.get(label, f"C{list(logs).index(label)}") if one_color else "0.35",
                        label=f"cap ({label})" if one_color else "cap")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_acr_bars(values: Mapping[str, object], paper: Mapping[str, float] | None = None, ax=None,
                  title: str | None = None):
    """Bars of average certified radius; ``values`` maps label -> log or float; ``paper`` adds hatched bars."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    labels = list(values)
    ours = [v if isinstance(v, (int, float)) else acr(_frame(v)) for v in values.values()]
    x = np.arange(len(labels))
    width = 0.4 if paper else 0.7
    bars = ax.bar(x - (width / 2 if paper else 0), ours, width, label="ours", color="C0")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    if paper:
        theirs = [paper.get(k, np.nan) for k in labels]
        pb = ax.bar(x + width / 2, theirs, width, label="paper", color="C7", hatch="//", alpha=0.7)
        ax.bar_label(pb, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("ACR")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_radius_histogram(logs: Mapping[str, object], bins: int = 30, ax=None, title: str | None = None):
    """Histogram of certified radii of correctly classified, non-abstained examples."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    frames = {k: _frame(v) for k, v in logs.items()}
    top = max(max(f["radius"].max() for f in frames.values()), 1e-3)
    edges = np.linspace(0, top, bins + 1)
    for label, f in frames.items():
        ok = f[(f["correct"] == 1) & (f["predict"] >= 0)]
        ax.hist(ok["radius"], bins=edges, histtype="step", lw=2, label=f"{label} ({len(ok)}/{len(f)} certified)")
    ax.set_xlabel("certified radius (correct predictions)")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_decision_regions(predict_grid, extent: Sequence[float] = (0, 1, 0, 1), resolution: int = 200,
                          points: np.ndarray | None = None, labels: np.ndarray | None = None,
                          circles: Sequence[tuple[float, float, float]] = (), ax=None, title: str | None = None,
                          num_classes: int | None = None):
    """Colour the plane by ``predict_grid(xy) -> classes`` (``xy``: ``(N, 2)`` tensor; -1 = abstain, grey).

    ``circles`` are ``(x, y, radius)`` certified balls drawn around points.
    """
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    x0, x1, y0, y1 = extent
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    xy = torch.tensor(np.c_[gx.ravel(), gy.ravel()], dtype=torch.float32)
    classes = np.asarray(predict_grid(xy)).reshape(gx.shape).astype(float)
    k = num_classes or int(max(classes.max(), (labels.max() if labels is not None else 0))) + 1
    cmap = plt.get_cmap("tab10")
    rgb = np.ones(gx.shape + (3,)) * 0.75
    for c in range(k):
        rgb[classes == c] = cmap(c)[:3]
    ax.imshow(rgb, origin="lower", extent=extent, alpha=0.35, interpolation="nearest", aspect="auto")
    if points is not None:
        ax.scatter(points[:, 0], points[:, 1], c=[cmap(int(c)) for c in labels], s=6, edgecolors="none")
    for cx, cy, r in circles:
        ax.add_patch(plt.Circle((cx, cy), r, fill=False, lw=1.5, color="k"))
        ax.plot([cx], [cy], "k.", ms=4)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax
