"""Exact re-ranking of approximate candidates with the stored float32 vectors.

A PQ index answers from 16x-compressed codes, which bounds its recall (0.56 at 1M for
IVF1024,PQ128, whatever nprobe). Re-ranking asks it for ``k x factor`` candidates, reads their
exact vectors (from the catalog in an index, from memory in tuning and benchmarks) and keeps
the ``k`` best by exact inner product: the recall of the candidates at the cost of reading
``k x factor`` vectors a query, and no float32 copy held in memory. The factor is tuned to
the target recall like nprobe (:mod:`.tuning`) and recorded per level (``{level}.rerank``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Fetch = Callable[[np.ndarray], np.ndarray]  # sorted unique ids -> their vectors (len(ids) x dim)
FACTORS = (2, 4, 8, 16, 32)  # candidates per result tried, cheapest first
_CHUNK = 64  # queries scored at once (bounds the candidates x dim block in memory)


def rerank(queries: np.ndarray, candidates: np.ndarray, fetch: Fetch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` of each query's ``candidates`` (ids, -1 padded) by exact inner product.

    Returns (scores (Q, k) float32, ids (Q, k) int64), -inf / -1 padded where fewer candidates.
    """
    uniq = np.unique(candidates[candidates >= 0])
    vecs = fetch(uniq) if len(uniq) else np.zeros((0, queries.shape[1]), np.float32)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for s in range(0, len(queries), _CHUNK):
        cand = candidates[s : s + _CHUNK]
        valid = cand >= 0
        pos = np.searchsorted(uniq, np.where(valid, cand, uniq[0] if len(uniq) else 0))
        if len(uniq) == 0:
            continue
        scores = np.einsum("qcd,qd->qc", vecs[pos], queries[s : s + _CHUNK])
        scores = np.where(valid, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_s = np.take_along_axis(scores, order, 1)
        top_i = np.where(np.isfinite(top_s), np.take_along_axis(cand, order, 1), -1)
        out_s[s : s + _CHUNK, : top_s.shape[1]] = top_s
        out_i[s : s + _CHUNK, : top_i.shape[1]] = top_i
    return out_s, out_i


def from_array(ids: np.ndarray, vectors: np.ndarray) -> Fetch:
    """A :data:`Fetch` over vectors held in memory (``ids`` ascending, as the catalog gives them)."""
    def fetch(wanted: np.ndarray) -> np.ndarray:
        return vectors[np.searchsorted(ids, wanted)]
    return fetch
