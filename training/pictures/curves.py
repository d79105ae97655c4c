"""Training curves from a run's ``metrics.csv`` (written by :mod:`training.loop`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

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


def plot_training_curves(metrics: str | Path, out: str | Path, *, title: str | None = None) -> Path:
    """One panel per logged scalar (loss, lr, clips/s, ...) against the optimiser step, as PNG."""
    data = read_metrics(metrics)
    names = [n for n in data if n not in _NOT_CURVES and np.isfinite(data[n]).any()]
    if not names:
        raise ValueError(f"{metrics}: no numeric columns to plot")
    plt = pyplot()
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        ax.plot(data["step"], data[name], lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if name == "loss" and np.nanmin(data[name]) > 0 and np.nanmax(data[name]) / np.nanmin(data[name]) > 20:
            ax.set_yscale("log")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
