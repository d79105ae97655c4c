"""IVF centroids by two-level k-means: coarse cells first, then the lists inside each cell.

One flat k-means over ``nlist`` centroids costs sample x nlist inner products an iteration,
so at 1M vectors it could afford only 5 iterations of 4096 centroids, and 5 were not enough:
a random start leaves most of the data's natural clusters without a centroid of their own,
and a cluster that has none is spread over lists whose centroids it barely resembles. On
``benchmarks/index_scale.py``'s data (10,000 clusters at 1M) 10 % of a query's true top-10
then sat outside its nearest list and 3 % outside its nearest 128, so the tuner needed nprobe 96
for recall@10 0.97. Two levels cost sample x (sqrt(nlist) + nlist / sqrt(nlist)) an iteration,
some 45x less at 8192 lists, so each level gets 20 iterations; one pass of flat k-means over the
whole sample then refines them (:data:`REFINE_WORK`). At 1M, 8192 lists so trained placed 97 % of
a query's top-10 in its nearest list and 98.7 % within its nearest 2, in 21 s on 2 cores (flat
k-means, 4096 lists, 5 iterations: 90 % and 92 %, 17 s). The table is in ``docs/index.md``.

The fine centroids of a cell are shared out in proportion to its points (largest remainders,
so there are exactly ``nlist``, each cell at least one and at most one per point).
"""

from __future__ import annotations

import math

import numpy as np

from vcl_infer._optional import require

ITERATIONS = 20  # per level of the start; both levels are cheap enough (see above)
TWO_LEVELS_FROM = 256  # below this many lists one flat k-means is as cheap
# The two-level start is then refined by flat k-means over the whole sample, as many iterations as
# this work (sample points x lists x iterations) allows, at least one and at most MAX_REFINE: 4096
# lists x 30 points x 5 iterations, 36 s on one loaded core. A cell boundary cuts clusters in two,
# and with fewer lists than clusters the halves had too few centroids: one pass over the whole
# sample puts them back (1M, 8192 lists: nearest list 91 -> 97 % of the top-10, 13 s on 2 cores;
# 200k 64-d vectors in 2,000 clusters, 1024 lists: refined 25 times, at least as good as flat
# k-means from a random start at every nprobe, 25 iterations each).
REFINE_WORK = 4096 * 30 * 4096 * 5
MAX_REFINE = 25


def ivf_centroids(sample: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """``nlist x d`` float32 centroids for an inner-product IVF index, trained on ``sample``."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if nlist < TWO_LEVELS_FROM:
        return _kmeans(sample, nlist, seed, MAX_REFINE)
    refine = int(min(MAX_REFINE, max(1, REFINE_WORK // (len(sample) * nlist))))
    return _kmeans(sample, nlist, seed, refine, start=_two_level(sample, nlist, seed))


def _two_level(sample: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """``nlist`` centroids: ``sqrt(nlist)`` coarse cells, then each cell's share of the lists."""
    cells = max(2, round(math.sqrt(nlist)))
    cell_of = _nearest(_kmeans(sample, cells, seed, ITERATIONS), sample)
    members = [np.flatnonzero(cell_of == c) for c in range(cells)]
    shares = _shares(np.array([len(m) for m in members]), nlist)
    parts = [_kmeans(sample[m], s, seed + 1 + c, ITERATIONS) for c, (m, s) in enumerate(zip(members, shares)) if s]
    return np.concatenate(parts)


def _shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``sizes`` summing to ``total``, each in [1, size] (0 for an empty cell)."""
    exact = sizes * total / sizes.sum()
    shares = np.minimum(np.maximum(np.floor(exact).astype(np.int64), (sizes > 0).astype(np.int64)), sizes)
    while (short := total - int(shares.sum())) != 0:  # one at a time, largest remainder first
        room, gap = (shares < sizes, exact - shares) if short > 0 else (shares > 1, shares - exact)
        shares[int(np.argmax(np.where(room, gap, -np.inf)))] += 1 if short > 0 else -1
    return shares


def _kmeans(points: np.ndarray, k: int, seed: int, iterations: int, start: np.ndarray | None = None) -> np.ndarray:
    """k-means on ``points`` (inner product), from ``start`` when given, else from random points."""
    faiss = require("faiss")
    clustering = faiss.Clustering(int(points.shape[1]), int(k))
    clustering.niter = int(iterations)
    clustering.seed = int(seed)
    clustering.min_points_per_centroid = 1  # a cell's share is at most one centroid per point: no warning
    clustering.max_points_per_centroid = max(1, len(points))  # the sample is already bounded: no resampling
    if start is not None:  # FAISS starts from centroids already there
        faiss.copy_array_to_vector(np.ascontiguousarray(start, dtype=np.float32).ravel(), clustering.centroids)
    clustering.train(np.ascontiguousarray(points), faiss.IndexFlatIP(int(points.shape[1])))
    return faiss.vector_to_array(clustering.centroids).reshape(int(k), -1)


def _nearest(centroids: np.ndarray, points: np.ndarray) -> np.ndarray:
    faiss = require("faiss")
    _, nearest = faiss.knn(points, np.ascontiguousarray(centroids), 1, metric=faiss.METRIC_INNER_PRODUCT)
    return nearest[:, 0]
