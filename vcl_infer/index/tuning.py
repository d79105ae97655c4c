"""Search parameters tuned to a target recall, measured against exact search on the index's own data.

After a FAISS index is (re)trained, :func:`tune` takes a sample of the indexed vectors as
queries, finds their exact top-10 by brute force, and walks the index's search knob (IVF
``nprobe``, HNSW ``efSearch``) from cheap to dear until the approximate top-10 reaches the
target recall@10. The chosen value and the recall it gave are recorded in the catalog's meta.
The sampled vectors are held out of the index while it is measured, so they stand for real
queries: near the indexed vectors, never equal to one.
"""

from __future__ import annotations

import math

import numpy as np

from vcl_infer.index import faiss_ops as F

DEFAULT_RECALL = 0.95
K = 10
TUNE_QUERIES = 256  # 256 x 10 neighbours: the measured recall has a standard error of ~0.004 at 0.95
# tune to target + MARGIN: on clustered 512-d data (benchmarks/index_scale.py) indexed vectors taken
# out as queries still read about 0.02 higher than fresh points from the same clusters, and the
# sample has its own error; the margin covers both so that unseen queries reach the target
MARGIN = 0.025
PLATEAU = 0.002  # a knob that gains less than this for two steps has reached the structure's ceiling
SEED = 4321


def check_recall(target: float | None) -> float:
    """The target recall@10 (the default when None); ``ValueError`` unless 0 < target <= 1."""
    if target is None:
        return DEFAULT_RECALL
    target = float(target)
    if not 0.0 < target <= 1.0 or math.isnan(target):
        raise ValueError(f"the target recall must be in (0, 1], got {target}")
    return target


def recorded_params(meta: dict[str, str], level: str) -> dict[str, float]:
    """The search parameters recorded for ``level`` (zeros: none, e.g. an exact Flat index)."""
    return {
        "nprobe": int(meta.get(f"{level}.nprobe", 0) or 0),
        "efsearch": int(meta.get(f"{level}.efsearch", 0) or 0),
        "recall": float(meta.get(f"{level}.recall", 1.0) or 1.0),
        "rerank": int(meta.get(f"{level}.rerank", 0) or 0),
    }


def knob_values(factory: str, nlist: int | None) -> tuple[str, list[int]]:
    """The knob to tune for ``factory`` and its values, cheapest first ('' and [] when exact)."""
    grid = sorted({v for e in range(21) for v in (1 << e, 3 << e)})
    if nlist:
        return "nprobe", [v for v in grid if v < nlist] + [nlist]
    if "HNSW" in factory:
        return "efsearch", [v for v in grid if 16 <= v <= 2048]
    return "", []


def recall_at_k(found: np.ndarray, truth: np.ndarray, self_ids: np.ndarray, k: int = K) -> float:
    """Mean |found ∩ truth| / k per query, after dropping each query's own id from both lists."""
    hits = 0
    for f, t, own in zip(found, truth, self_ids):
        f = [i for i in f if i != own][:k]
        t = [i for i in t if i != own][:k]
        hits += len(set(f) & set(t))
    return hits / (k * len(found))


def exact_neighbours(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top-``k`` by inner product (brute force, no copy of ``vectors``)."""
    faiss = F.faiss_module()
    _, pos = faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(vectors), k,
                       metric=faiss.METRIC_INNER_PRODUCT)
    return np.where(pos >= 0, ids[np.clip(pos, 0, None)], -1)


def tune(index, factory: str, ids: np.ndarray, vectors: np.ndarray, target: float) -> dict[str, float]:
    """The cheapest search setting of ``index`` reaching ``target`` recall@10 on a sample of ``vectors``.

    The sampled vectors are taken out of an IVF index while it is measured (and put back after),
    so they are queries the index has never seen, as real queries are; for a graph (HNSW), which
    cannot let go of them, the queries are points one nearest-neighbour distance away from them.
    Returns ``{"nprobe", "efsearch", "recall"}`` and leaves ``index`` set to it. When no
    setting reaches the target (a PQ index's codes bound its recall) the knob stops where the
    recall stops improving, and the recall returned says what was reached.
    """
    knob, values = knob_values(factory, F.nlist_of(factory))
    params = {"nprobe": 0, "efsearch": 0, "recall": 1.0, "rerank": 0}
    if not knob or len(ids) <= 4 * K:
        if knob:
            params[knob] = values[-1]
            _apply(index, factory, params)
        return params
    rng = np.random.default_rng(SEED)
    rows = np.sort(rng.choice(len(ids), min(TUNE_QUERIES, len(ids) // 4), replace=False))
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    held_out = bool(F.nlist_of(factory))
    if held_out:
        index.remove_ids(np.ascontiguousarray(ids[rows]))
    try:
        if held_out:
            truth, own = _held_out_truth(vectors, ids, queries, ids[rows]), np.full(len(rows), -2, np.int64)
        else:  # the graph cannot let go of them: query near them instead (see _nearby)
            queries = _nearby(vectors, ids, queries, rng)
            truth, own = exact_neighbours(vectors, ids, queries, K), np.full(len(rows), -2, np.int64)
        params = _walk(index, factory, knob, values, queries, truth, own, target, rerank_with(ids, vectors))
    finally:
        if held_out:
            index.add_with_ids(queries, np.ascontiguousarray(ids[rows]))
    return params


def _nearby(vectors, ids, queries, rng) -> np.ndarray:
    """Points as far from each sampled vector as its nearest neighbour is, in a random direction.

    A vector that is in an HNSW graph is found at once (its own links are its neighbours), so
    it would read a far higher recall than a real query; a point displaced by one
    nearest-neighbour distance is off the graph and near the data, as a real query is.
    """
    faiss = F.faiss_module()
    sims, _ = faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(vectors), 2,
                        metric=faiss.METRIC_INNER_PRODUCT)
    dist = np.sqrt(np.clip(2.0 - 2.0 * sims[:, 1:2], 0.0, None))  # unit vectors: |a-b|^2 = 2 - 2 a.b
    step = rng.standard_normal(queries.shape).astype(np.float32)
    step *= dist / np.linalg.norm(step, axis=1, keepdims=True)
    moved = queries + step
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


def _held_out_truth(vectors, ids, queries, query_ids) -> np.ndarray:
    """Exact top-K of each query among the vectors that are not queries themselves."""
    extra = 8
    while True:
        cand = exact_neighbours(vectors, ids, queries, K + extra)
        keep = ~np.isin(cand, query_ids)
        if (keep.sum(axis=1) >= K).all() or K + extra >= len(ids):
            return np.stack([row[k][:K] for row, k in zip(cand, keep)])
        extra *= 4


def rerank_with(ids: np.ndarray, vectors: np.ndarray):
    """The exact-vector lookup tuning re-ranks with (the vectors being indexed)."""
    from vcl_infer.index.rerank import from_array

    return from_array(np.ascontiguousarray(ids, dtype=np.int64), vectors)


def _measure(index, queries, truth, own, factor: int, fetch) -> float:
    from vcl_infer.index.rerank import rerank

    if factor:
        _, cand = index.search(queries, (K + 1) * factor)
        found = rerank(queries, cand, fetch, K + 1)[1]
    else:
        _, found = index.search(queries, K + 1)
    return recall_at_k(found, truth, own)


def _walk(index, factory, knob, values, queries, truth, own, target, fetch=None) -> dict[str, float]:
    """The cheapest knob value reaching target + margin; for a lossy code (PQ, SQ), whose recall the
    codes bound, nprobe is walked with exact re-ranking of the most candidates tried
    (:data:`~.rerank.FACTORS`), then the fewest candidates keeping that recall are chosen."""
    from vcl_infer.index.rerank import FACTORS

    params = {"nprobe": 0, "efsearch": 0, "recall": 0.0, "rerank": 0}
    goal = min(1.0, target + MARGIN)
    lossy = "PQ" in factory or "SQ" in factory  # an exact-code index reaches 1.0 at nprobe = nlist
    factor = FACTORS[-1] if lossy and fetch is not None else 0
    history: list[float] = []
    for value in values:
        params[knob] = value
        _apply(index, factory, params)
        params["recall"] = _measure(index, queries, truth, own, factor, fetch)
        history.append(params["recall"])
        if params["recall"] >= goal:
            break
        if lossy and len(history) >= 3 and history[-1] - history[-3] < PLATEAU:
            break
    if factor:
        best = params["recall"]
        for f in (0, *FACTORS):  # the fewest candidates that keep (nearly) the recall reached
            recall = best if f == factor else _measure(index, queries, truth, own, f, fetch)
            if recall >= min(goal, best - PLATEAU):
                params["rerank"], params["recall"] = f, recall
                break
    return params


def _apply(index, factory: str, params: dict[str, float]) -> None:
    F.set_search_params(index, factory, int(params["nprobe"]), int(params["efsearch"]))
