"""Batched IVF search grouped by list answers as FAISS's query-by-query scan does."""

from __future__ import annotations

import numpy as np
import pytest

from vcl_infer.index import faiss_ops as F
from vcl_infer.index import grouped_search as G

DIM = 24


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ivf(rng, n, nlist=32):
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # ids are not positions
    return F.build(f"IVF{nlist},Flat", DIM, ids, _unit(rng, n)), ids


def _probes(index, q, nprobe):
    return F.faiss_module().extract_index_ivf(index).quantizer.search(q, nprobe)[1]


def _assert_same_answers(got_scores, got_ids, want_scores, want_ids, tie=1e-5):
    """The same neighbours with the same scores; two whose scores tie (within rounding: a list
    scanned with BLAS rounds its last bits differently) may come in either order."""
    np.testing.assert_allclose(got_scores, want_scores, atol=tie)
    for row, (g, w, ws) in enumerate(zip(got_ids, want_ids, want_scores)):
        for j in np.flatnonzero(g != w):
            tied = np.flatnonzero(np.abs(ws - ws[j]) <= tie)
            assert g[j] in w[tied], f"row {row} rank {j}: {g[j]} is not among FAISS's tied answers {w[tied]}"


@pytest.mark.parametrize("nprobe,k", [(1, 10), (4, 10), (32, 5), (3, 500)])  # k=500: more than the probed lists hold
def test_grouped_search_equals_faiss(nprobe, k):
    rng = np.random.default_rng(nprobe + k)
    index, _ = _ivf(rng, 2000)
    q = _unit(rng, 70)
    index.nprobe = nprobe
    want_scores, want_ids = index.search(q, k)
    got_scores, got_ids = G.grouped_search([G.InvertedListReader(index)], q, _probes(index, q, nprobe), k)
    _assert_same_answers(got_scores, got_ids, want_scores, want_ids)


def test_excluded_ids_are_left_out_and_replaced_by_the_next_best():
    rng = np.random.default_rng(1)
    index, ids = _ivf(rng, 1500)
    q = _unit(rng, 40)
    index.nprobe = 4
    _, first = index.search(q, 10)
    excluded = np.unique(first[:, :3])  # every query's three best
    sel = F.faiss_module().IDSelectorNot(F.faiss_module().IDSelectorBatch(excluded))
    params = F.faiss_module().SearchParametersIVF()
    params.nprobe, params.sel = 4, sel
    want_scores, want_ids = index.search(q, 10, params=params)
    got_scores, got_ids = G.grouped_search([G.InvertedListReader(index)], q, _probes(index, q, 4), 10, excluded)
    assert not np.isin(got_ids, excluded).any()
    _assert_same_answers(got_scores, got_ids, want_scores, want_ids)


@pytest.mark.parametrize("threads", [1, 3])  # the lists shared out among threads, or not
def test_segments_sharing_centroids_answer_as_one_index(monkeypatch, threads):
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 3000)
    ids = np.arange(3000, dtype=np.int64) * 7
    one = F.build("IVF16,Flat", DIM, ids, vectors)
    parts = []
    for s in (slice(0, 1000), slice(1000, 2200), slice(2200, 3000)):  # a base and two deltas
        part = F.faiss_module().clone_index(one)
        part.reset()
        parts.append(F.add_all(part, ids[s], vectors[s]))
    q = _unit(rng, 300)
    monkeypatch.setattr(G, "CHUNK", 128)  # several chunks
    one.nprobe = 3
    want_scores, want_ids = one.search(q, 10)
    faiss, before = F.faiss_module(), F.faiss_module().omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        got_scores, got_ids = G.grouped_search([G.InvertedListReader(p) for p in parts], q, _probes(one, q, 3), 10)
    finally:
        faiss.omp_set_num_threads(before)
    _assert_same_answers(got_scores, got_ids, want_scores, want_ids)


def test_only_inner_product_ivf_flat_is_grouped():
    rng = np.random.default_rng(3)
    ids = np.arange(600, dtype=np.int64)
    x = _unit(rng, 600)
    assert G.groupable(F.build("IVF8,Flat", DIM, ids, x))
    assert not G.groupable(F.build("Flat", DIM, ids, x))
    assert not G.groupable(F.build("IVF8,PQ4", DIM, ids, x))
