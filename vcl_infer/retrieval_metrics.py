"""Video retrieval recall at k, as the TCLR and FAME papers compute it.

Test-split videos query the train split; a query scores a hit at k when any of its k nearest
gallery videos (cosine similarity) shares its class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def pool_clips(clip_vectors: np.ndarray) -> np.ndarray:
    """``n x D`` clip vectors -> the video vector ``(D,)`` float32: the mean of the
    L2-normalised clip vectors, renormalised (how every vcl video vector is made)."""
    return l2_normalize(l2_normalize(clip_vectors).mean(axis=0)).astype(np.float32)


def recall_at_k(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 20, 50),
) -> dict[int, float]:
    """Fraction of queries with a same-class video among their top-k gallery neighbours.

    Args:
        queries: ``Q x D`` embeddings (normalised here).
        query_labels: ``Q`` class ids.
        gallery: ``G x D`` embeddings.
        gallery_labels: ``G`` class ids.
        ks: the cut-offs; a k larger than G counts the whole gallery.
    """
    similarity = l2_normalize(queries) @ l2_normalize(gallery).T
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = np.asarray(gallery_labels)[order] == np.asarray(query_labels)[:, None]
    return {k: float(np.mean(hits[:, :k].any(axis=1))) for k in ks}
