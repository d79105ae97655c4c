"""IVF centroids from two-level k-means: exactly nlist of them, and lists that keep neighbours together."""

from __future__ import annotations

import numpy as np
import pytest

from vcl_infer.index import centroids as C
from vcl_infer.index import faiss_ops as F

DIM = 256


def _clustered(rng, n, centres):
    """Unit vectors: a random centre plus Gaussian noise as large as the centre (benchmarks/index_scale.py's data)."""
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _share_in_nearest_lists(centroids, base, queries, nprobe):
    """The share of each query's exact top-10 whose list is among the query's ``nprobe`` nearest."""
    faiss = F.faiss_module()
    _, truth = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, home = faiss.knn(base, centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)
    _, probed = faiss.knn(queries, centroids, nprobe, metric=faiss.METRIC_INNER_PRODUCT)
    return float(np.mean([np.isin(home[t, 0], p).mean() for t, p in zip(truth, probed)]))


@pytest.mark.parametrize("nlist", [64, 300, 512])  # one flat k-means, and two levels with odd and even cells
def test_exactly_nlist_finite_centroids_the_same_for_the_same_seed(nlist):
    rng = np.random.default_rng(nlist)
    sample = _clustered(rng, 30 * nlist, rng.standard_normal((100, DIM)).astype(np.float32) / np.sqrt(DIM))
    first = C.ivf_centroids(sample, nlist, seed=7)
    assert first.shape == (nlist, DIM) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(C.ivf_centroids(sample, nlist, seed=7), first)


def test_shares_sum_to_the_lists_in_proportion_each_cell_between_one_and_its_points():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 60, rng.integers(2, 40))
        sizes[rng.integers(0, len(sizes))] += 1  # at least one point
        total = int(rng.integers(int((sizes > 0).sum()), sizes.sum() + 1))
        shares = C._shares(sizes, total)
        assert shares.sum() == total
        assert ((shares >= 1) | (sizes == 0)).all() and (shares <= sizes).all()
        assert np.abs(shares - sizes * total / sizes.sum()).max() < 1 + 1e-9 or (shares == 1).any() or (shares == sizes).any()


def _collection(seed, clusters, queries, nlist):
    """``(base, queries, sample)``: 100 vectors a cluster, fresh queries, and 30 sample points a list."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32) / np.sqrt(DIM)
    base, fresh = _clustered(rng, 100 * clusters, centres), _clustered(rng, queries, centres)
    return base, fresh, base[rng.choice(len(base), 30 * nlist, replace=False)]


def test_lists_keep_a_querys_neighbours_in_its_nearest_lists():
    """Clusters of 100 vectors, 0.85 a list (1M in benchmarks/index_scale.py: 10,000 in 8192 lists)."""
    nlist = 512
    base, queries, sample = _collection(3, 600, 300, nlist)
    got = _share_in_nearest_lists(C.ivf_centroids(sample, nlist, seed=1), base, queries, 2)
    assert got >= 0.97, got


def test_two_level_start_beats_a_random_start_of_the_same_work():
    """More lists than clusters: the two levels (20 iterations each, about 2 flat iterations' work
    here) give most clusters a list of their own, where a random start given the same work leaves
    some without one."""
    nlist = 1024
    base, queries, sample = _collection(4, 900, 1000, nlist)
    two_level = _share_in_nearest_lists(C._two_level(sample, nlist, seed=1), base, queries, 1)
    random_start = _share_in_nearest_lists(C._kmeans(sample, nlist, seed=1, iterations=2), base, queries, 1)
    assert two_level > random_start + 0.01, (two_level, random_start)
