"""Training curves from a run's ``metrics.csv`` (written by :mod:`training.loop`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from training.pictures._plt import pyplot

_NOT_CURVES = ("step", "epoch")


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """``metrics.csv`` (a file, or a run folder holding one) -> column name -> float array.

    Empty or non-numeric cells become NaN. Raises ValueError when there is no ``step`` column.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "step" not in rows[0]:
        raise ValueError(f"{path}: no metrics rows with a 'step' column")

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {name: np.array([num(r.get(name)) for r in rows]) for name in rows[0]}


def training_curves_figure(data: dict[str, np.ndarray], *, title: str | None = None) -> Any:
    """One panel per logged scalar (loss, lr, clips/s, ...) against the optimiser step.

    Every logged value is drawn as a marker as well as a line, so a run with one logged row
    still shows its point (a line through one point draws nothing).

    Args:
        data: :func:`read_metrics`'s columns (``step`` and the scalars).
        title: figure title (e.g. the run folder).

    Returns:
        A ``matplotlib.figure.Figure`` (Agg canvas).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pyplot()  # the error naming the extra when matplotlib is missing
    names = [n for n in data if n not in _NOT_CURVES and np.isfinite(data[n]).any()]
    if not names:
        raise ValueError("no numeric columns to plot")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)  # headless raster canvas: savefig and pixel access without pyplot
    axes = fig.subplots(rows, cols, squeeze=False)
    steps = data["step"]
    for ax, name in zip(axes.ravel(), names):
        values = data[name]
        shown = np.isfinite(values) & np.isfinite(steps)
        few = int(shown.sum()) <= 60
        ax.plot(steps[shown], values[shown], lw=1.2, marker="o" if few else None, ms=4 if few else 0)
        last = np.flatnonzero(shown)[-1]
        ax.set_title(f"{name} (last {values[last]:.4g} at step {steps[last]:g})", fontsize=9)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        positive = values[shown][values[shown] > 0]
        if name == "loss" and len(positive) == shown.sum() and positive.max() / positive.min() > 20:
            ax.set_yscale("log")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(title or "training curves")
    return fig


def plot_training_curves(metrics: str | Path, out: str | Path, *, title: str | None = None) -> Path:
    """:func:`training_curves_figure` of a run's ``metrics.csv`` (file or run folder), saved as PNG."""
    data = read_metrics(metrics)
    try:
        fig = training_curves_figure(data, title=title or f"training curves: {metrics}")
    except ValueError as exc:
        raise ValueError(f"{metrics}: {exc}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
