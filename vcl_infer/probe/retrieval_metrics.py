"""Video retrieval recall at k, as the TCLR and FAME papers compute it.

Test-split videos query the train split; a query scores a hit at k when any of its k nearest
gallery videos (cosine similarity) shares its class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vcl_infer.encode.pooling import l2_normalize


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
