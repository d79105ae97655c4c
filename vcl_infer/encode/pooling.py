"""How clip vectors become one video vector: L2-normalise each, average, renormalise.

Every vcl video vector is made this way (the index's, the probe's training vectors, a
query's), so the one definition lives beside the encoder that produces the clip vectors.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Each row (last axis) scaled to unit length, float64; all-zero rows stay (near) zero."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def pool_clips(clip_vectors: np.ndarray) -> np.ndarray:
    """``n x D`` clip vectors -> the video vector ``(D,)`` float32: the mean of the
    L2-normalised clip vectors, renormalised (how every vcl video vector is made)."""
    return l2_normalize(l2_normalize(clip_vectors).mean(axis=0)).astype(np.float32)
