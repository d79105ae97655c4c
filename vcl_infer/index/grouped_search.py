"""Batched IVF search grouped by inverted list: each probed list is read once per batch.

FAISS's CPU IVF search scans the probed lists query by query, so a batch of ``B`` queries
reads a list as many times as queries probe it. At 1M 512-d vectors in 4096 lists and nprobe
96 (the previous automatic layout) that was about 47 MiB of vectors a query, memory-bound, while
exact search answers the whole batch with one BLAS product. Since the lists are finer and better
placed (:mod:`.centroids`: nprobe 2 at 1M) an automatic index's batches rarely share lists enough;
grouping pays for higher recall targets, coarser factories given by hand, and large batches. Here
the batch's (query, list) pairs are grouped by list and each list is scored against all of
its queries in one call of FAISS's exact k-NN kernel, the list held in cache while they scan
it: the same inner products over the same probed lists (so the same top-k as FAISS, up to
the order of ties within rounding: a list scanned on BLAS rounds differently), with each list
read from memory once. A list holding excluded (tombstoned) ids is scored with one matrix
product and the excluded columns masked.

Only ``IVF...,Flat`` with inner product qualifies (its codes are the float32 vectors
themselves); other encodings are searched by FAISS.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vcl_infer.index import faiss_ops as F

# Grouping pays when a list is shared by enough work: its queries x its vectors (the vector scans
# it saves re-reading) at least SHARED_WORK. Measured on one core, 512-d, a batch of 2000, grouped
# vs FAISS's query-by-query scan: 49-vector lists (100k, IVF2048) 3.6x slower at 2 queries a list,
# 1.4x slower at 16, 1.2x faster at 31 (1500); 244-vector lists (1M, IVF4096) 1.3x slower at 4
# queries (950), even at 8 (1900), 1.5x faster at 16 (3800). Below MIN_BATCH queries FAISS answers.
# A large batch is answered in chunks so the candidate buffers stay small (chunk x nprobe x k).
MIN_BATCH = 16
SHARED_WORK = 2000.0
CHUNK = 1024
EMPTY_SCORE = float(np.finfo(np.float32).min)  # what FAISS gives an inner-product row it cannot fill


def groupable(index: Any) -> bool:
    """Whether ``index`` is an inner-product IVF index whose codes are the float32 vectors."""
    faiss = F.faiss_module()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    ivf = faiss.downcast_index(ivf)
    return type(ivf) is faiss.IndexIVFFlat and ivf.metric_type == faiss.METRIC_INNER_PRODUCT


def worth_grouping(batch: int, nprobe: int, nlist: int, ntotal: int) -> bool:
    """Whether a batch of ``batch`` queries, ``nprobe`` lists each of ``nlist`` holding ``ntotal``
    vectors, shares its lists enough (see :data:`SHARED_WORK`)."""
    queries_a_list, vectors_a_list = batch * nprobe / max(1, nlist), ntotal / max(1, nlist)
    return batch >= MIN_BATCH and queries_a_list * vectors_a_list >= SHARED_WORK


class InvertedListReader:
    """Zero-copy numpy views of one IVF-Flat index's lists (memory-mapped ones stay mapped)."""

    def __init__(self, index: Any) -> None:
        faiss = F.faiss_module()
        self._ivf = faiss.extract_index_ivf(index)
        self._lists = self._ivf.invlists
        self._dim = int(self._ivf.d)
        self._rev = faiss.rev_swig_ptr

    def list(self, number: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(vectors n x d, ids n)`` of list ``number``; None when it is empty."""
        n = int(self._lists.list_size(int(number)))
        if n == 0:
            return None
        codes = self._rev(self._lists.get_codes(int(number)), n * self._dim * 4)
        vectors = np.frombuffer(codes, dtype=np.float32).reshape(n, self._dim)
        return vectors, self._rev(self._lists.get_ids(int(number)), n)


def grouped_search(readers: list[InvertedListReader], q: np.ndarray, probes: np.ndarray, k: int,
                   excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) of ``q`` over the lists ``probes`` names (``B x nprobe``, -1 for
    none) in every reader, leaving out the ids in ``excluded``; short rows are filled as FAISS
    fills them (:data:`EMPTY_SCORE`, id -1)."""
    from threadpoolctl import threadpool_limits

    q = np.ascontiguousarray(q, dtype=np.float32)
    # one BLAS thread per product: they are small (a list x its queries), and BLAS's threads
    # spinning for each of thousands of them cost 11x at 300k vectors on a loaded 2-core machine;
    # the lists are shared out among FAISS's thread count instead
    threads = max(1, int(F.faiss_module().omp_get_max_threads()))  # as many as FAISS would use
    with threadpool_limits(limits=1, user_api="blas"), F.blas_for_batch(q):
        parts = [_search_chunk(readers, q[s:s + CHUNK], probes[s:s + CHUNK], k, excluded, threads)
                 for s in range(0, len(q), CHUNK)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _search_chunk(readers, q, probes, k, excluded, threads):
    b, p = probes.shape
    slots = p * len(readers)  # a candidate slot per (probed list, segment) of each query
    cand_scores = np.full((b, slots, k), -np.inf, np.float32)
    cand_ids = np.full((b, slots, k), -1, np.int64)
    pairs = probes.ravel()
    order = np.argsort(pairs, kind="stable")
    lists, starts = np.unique(pairs[order], return_index=True)
    bounds = np.append(starts, len(order))
    groups = [(number, order[bounds[j]:bounds[j + 1]]) for j, number in enumerate(lists) if number >= 0]

    def score(part: list) -> None:  # each (query, list) pair has its own slot: threads never share one
        if threads > 1:
            F.faiss_module().omp_set_num_threads(1)  # this thread's own setting: no nested OpenMP
        for number, members in part:
            rows, probe_slot = members // p, members % p
            for r, reader in enumerate(readers):
                _score_list(reader.list(number), q[rows], k, excluded, cand_scores, cand_ids, rows,
                            probe_slot * len(readers) + r)

    if threads > 1 and len(groups) > 1:  # the products release the GIL
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(score, [groups[t::threads] for t in range(threads)]))
    else:
        score(groups)
    return _best(cand_scores.reshape(b, -1), cand_ids.reshape(b, -1), k)


def _score_list(held, queries, k, excluded, cand_scores, cand_ids, rows, slots) -> None:
    """Write one list's top-``k`` for each of its queries into their candidate slots."""
    if held is None:
        return
    vectors, ids = held
    kk = min(k, len(ids))
    dropped = np.isin(ids, excluded) if excluded is not None and len(excluded) else None
    if dropped is not None and dropped.any():
        scores, top = _top_without(vectors, dropped, queries, kk)
    else:  # FAISS's exact k-NN kernel: the list stays in cache while its m queries scan it
        faiss = F.faiss_module()
        scores, top = faiss.knn(queries, vectors, kk, metric=faiss.METRIC_INNER_PRODUCT)
    cand_scores[rows, slots, :kk] = scores
    cand_ids[rows, slots, :kk] = np.where(np.isfinite(scores) & (top >= 0), ids[np.maximum(top, 0)], -1)


def _top_without(vectors, dropped, queries, kk) -> tuple[np.ndarray, np.ndarray]:
    """``m x kk`` best scores and their positions in a list whose ``dropped`` rows are excluded (-inf)."""
    scores = queries @ vectors.T
    scores[:, dropped] = -np.inf
    top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if len(vectors) > kk else np.arange(kk)[None].repeat(len(queries), 0)
    return np.take_along_axis(scores, top, 1), top


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best candidates, best first."""
    kk = min(k, scores.shape[1])
    top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    top_scores = np.take_along_axis(scores, top, 1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    best = np.take_along_axis(top_scores, order, 1)
    best_ids = np.take_along_axis(np.take_along_axis(ids, top, 1), order, 1)
    empty = ~np.isfinite(best)
    best[empty], best_ids[empty] = EMPTY_SCORE, -1
    return best, best_ids
