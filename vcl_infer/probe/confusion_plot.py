"""The confusion matrix of a classification run as a labelled picture (matplotlib, ``vcl[classify]``).

Rows are the true classes, columns the predicted ones, both named on the axes; a cell's
colour is the share of the true class's videos predicted as that column (so classes with
few videos read the same as big ones) and its text is the video count. Drawn on a bare
:class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state, no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_NUMBERS_UP_TO = 40  # classes; beyond, the cells are too small for legible text


def require_matplotlib() -> None:
    """Fail now, before minutes of embedding, when matplotlib is missing (names the extra)."""
    from vcl_infer._optional import require

    require("matplotlib")


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], *, title: str | None = None) -> Any:
    """A ``K x K`` count matrix (rows true, columns predicted) -> a matplotlib ``Figure``.

    Args:
        matrix: counts, ``K x K``.
        class_names: the K names, in row/column order.
        title: figure title; default says what the picture is and the overall accuracy.
    """
    from vcl_infer._optional import require

    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64)
    k = counts.shape[0] if counts.ndim == 2 else -1
    if counts.ndim != 2 or counts.shape != (k, k) or k < 1:
        raise ValueError(f"need a K x K matrix, got shape {counts.shape}")
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k} x {k} matrix")
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(40.0, max(4.5, 0.45 * k + 2.5))
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    FigureCanvasAgg(fig)  # headless raster canvas: savefig and pixel access without pyplot
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's videos")
    font = max(4.0, min(10.0, 220.0 / k))
    rotation, align = (90, "center") if k > 6 else (45, "right")
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=rotation, ha=align, fontsize=font)
    ax.set_yticks(range(k), [str(c) for c in class_names], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(counts.sum())
    correct = int(np.trace(counts))
    ax.set_title(title or f"confusion matrix (rows: true class, columns: predicted)\n{correct} of {total} "
                          f"videos correct ({correct / max(total, 1):.1%}); numbers are video counts", fontsize=10)
    if k <= _NUMBERS_UP_TO:
        for i in range(k):
            for j in range(k):
                if counts[i, j] or i == j:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                            color="white" if rates[i, j] > 0.5 else "black")
    return fig


def confusion_png(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, *,
                  title: str | None = None) -> Path:
    """Save :func:`confusion_figure` as a PNG at ``path``; returns the path."""
    fig = confusion_figure(matrix, class_names, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
