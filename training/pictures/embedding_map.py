"""A 2-D map of video embeddings coloured by class (PCA; t-SNE when scikit-learn is installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from training.pictures._plt import pyplot


def pca_2d(x: np.ndarray) -> np.ndarray:
    """``N x D`` -> ``N x 2``: projection on the two leading principal axes (numpy SVD).

    Signs are fixed so the largest-magnitude loading of each axis is positive (deterministic).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"expected N x D embeddings with N >= 2, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:  # D == 1
        axes = np.vstack([axes, np.zeros_like(axes)])
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    return centred @ axes.T


def embedding_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``N x D`` -> ``N x 2`` by ``pca`` or ``tsne`` (scikit-learn; falls back to nothing: errors)."""
    if method == "pca":
        return pca_2d(x)
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as exc:
            raise ValueError("t-SNE needs scikit-learn (pip install scikit-learn); use method='pca'") from exc
        x = np.asarray(x, dtype=np.float64)
        return TSNE(2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), random_state=seed, init="pca").fit_transform(x)
    raise ValueError(f"method must be pca or tsne, got {method!r}")


def plot_embedding_map(
    embeddings: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    *,
    classes: Sequence[str] | None = None,
    method: str = "pca",
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """Scatter the 2-D map of ``N x D`` ``embeddings``, one colour per class, as PNG."""
    labels = np.asarray(labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    xy = embedding_2d(embeddings, method, seed)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    cmap = plt.get_cmap("tab10" if len(np.unique(labels)) <= 10 else "tab20")
    for i, c in enumerate(np.unique(labels)):
        m = labels == c
        name = classes[int(c)] if classes is not None and 0 <= int(c) < len(classes) else str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=18, color=cmap(i % cmap.N), label=name, alpha=0.85)
    ax.legend(fontsize=7, loc="best", markerscale=1.2)
    ax.set_title(title or f"video embeddings ({method.upper()})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
