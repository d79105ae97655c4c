"""Approximate search at scale: the index's own factory choice and recall tuning vs exact search.

For each size N it makes clustered 512-d unit vectors (scenes and actions cluster; a uniform
cloud is the worst case and no embedding looks like it), builds the index the way
``VideoIndex`` does (factory by size and memory, IVF trained on a bounded sample, nprobe tuned
to the target recall on a sample of the indexed vectors), and then measures on held-out
queries (fresh points from the same clusters, never indexed):

- recall@10 of the tuned setting against exact brute-force search;
- queries per second, one query at a time and in one batch, for the tuned index and for an
  exact ``Flat`` index over the same vectors, side by side, with the spread of repeats (the
  tuned index is searched as ``VideoIndex`` searches it: a batch over IVF-Flat list by list,
  :mod:`vcl_infer.index.grouped_search`, where enough queries share a list; FAISS's own
  query-by-query scan of the same batch is timed beside it);
- build, training and tuning time, and the index's memory.

``--factory`` forces a structure (e.g. ``ivfpq``: the memory-bounded layout for large
collections) instead of the automatic choice. Run:

    PYTHONPATH=. python benchmarks/index_scale.py --sizes 100000,1000000
    PYTHONPATH=. python benchmarks/index_scale.py --sizes 1000000 --factory ivfpq

For a PQ index the tuned setting includes exact re-ranking (``k x factor`` candidates re-scored
with the float32 vectors, :mod:`vcl_infer.index.rerank`); the index's memory printed is the PQ
index alone (the vectors re-ranked with stay on disk in the catalog, read k x factor a query).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from vcl_infer.index import faiss_ops as F
from vcl_infer.index import grouped_search as G
from vcl_infer.index import tuning as T


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """``n`` unit vectors: a random centre plus Gaussian noise as large as the centre itself."""
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        x = centres[rng.integers(0, len(centres), e - s)]
        x += rng.standard_normal((e - s, dim), dtype=np.float32) / np.sqrt(dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    return out


class ReRanked:
    """An index searched for ``k x factor`` candidates, re-ranked exactly with the vectors in memory
    (an index re-ranks with the catalog's stored vectors the same way)."""

    def __init__(self, index, factor: int, fetch) -> None:
        self.index, self.factor, self.fetch = index, factor, fetch

    def search(self, q: np.ndarray, k: int):
        from vcl_infer.index.rerank import rerank

        if not self.factor:
            return self.index.search(q, k)
        _, cand = self.index.search(q, k * self.factor)
        return rerank(q, cand, self.fetch, k)


class AsLevelView:
    """The tuned FAISS index searched as ``VideoIndex`` searches it: a batch of IVF-Flat queries
    list by list (:mod:`vcl_infer.index.grouped_search`), anything else by FAISS itself."""

    def __init__(self, index) -> None:
        self.index = index
        self.readers = [G.InvertedListReader(index)] if G.groupable(index) else None

    def search(self, q: np.ndarray, k: int):
        with F.blas_for_batch(q):
            return self._search(q, k)

    def _search(self, q: np.ndarray, k: int):
        if self.readers is None:
            return self.index.search(q, k)
        ivf = F.faiss_module().extract_index_ivf(self.index)
        if not G.worth_grouping(len(q), ivf.nprobe, ivf.nlist, ivf.ntotal):
            return self.index.search(q, k)
        _, probes = ivf.quantizer.search(q, ivf.nprobe)
        return G.grouped_search(self.readers, q, probes, k)


class ExactAtItsBest:
    """Exact search at its fastest: FAISS 1.15 takes its BLAS path only from a few hundred queries
    (measured: 100 queries at 200k vectors ran at one query's speed, 500 at 12x), which would sell
    exact search short on the smaller batches; a batch of 2 or more lowers the threshold (a single
    query is faster on FAISS's own scan: 72 vs 29 QPS at 100k)."""

    def __init__(self, index) -> None:
        self.index = index

    def search(self, q: np.ndarray, k: int):
        if len(q) < 2:
            return self.index.search(q, k)
        cvar = F.faiss_module().cvar
        before = cvar.distance_compute_blas_threshold
        cvar.distance_compute_blas_threshold = 20
        try:
            return self.index.search(q, k)
        finally:
            cvar.distance_compute_blas_threshold = before


def qps(index, queries: np.ndarray, k: int, batched: bool, repeats: int) -> list[float]:
    """Queries per second of ``repeats`` runs (one call for the batch, or one call per query)."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if batched:
            index.search(queries, k)
        else:
            for q in queries:
                index.search(q[None], k)
        rates.append(len(queries) / (time.perf_counter() - t0))
    return rates


def fmt(rates: list[float]) -> str:
    return f"{statistics.median(rates):9.1f} [{min(rates):.1f}-{max(rates):.1f}]"


def run(n: int, dim: int, nq: int, single: int, target: float, factory_request: str, repeats: int,
        seed: int, exact_batch: int, more_batches: list[int]) -> dict:
    faiss = F.faiss_module()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(100, n // 100), dim), dtype=np.float32) / np.sqrt(dim)
    t0 = time.perf_counter()
    base = clustered(rng, n, dim, centres)
    queries = clustered(rng, nq, dim, centres)  # held out: never indexed, never used for tuning
    extra = clustered(rng, max(more_batches, default=0), dim, centres)  # held out too: the batch sweep
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # catalog-like ids, not positions
    t_data = time.perf_counter() - t0
    factory = F.effective_factory(factory_request, n, dim)

    t0 = time.perf_counter()
    timings: dict = {}
    index = F.build(factory, dim, ids, base, F.default_nprobe(factory), timings=timings)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    params = T.tune(index, factory, ids, base, target)
    t_tune = time.perf_counter() - t0

    t0 = time.perf_counter()
    truth = T.exact_neighbours(base, ids, queries, T.K)
    t_truth = time.perf_counter() - t0
    codes_alone = float(np.mean([len(set(a) & set(b)) / T.K for a, b in zip(index.search(queries, T.K)[1], truth)]))
    index_mb, raw = len(F.serialize(index)) / 2**20, index
    index = ReRanked(AsLevelView(index), int(params.get("rerank", 0)), T.rerank_with(ids, base))
    _, found = index.search(queries, T.K)
    recall = float(np.mean([len(set(a) & set(b)) / T.K for a, b in zip(found, truth)]))

    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    exact = ExactAtItsBest(flat)
    one = queries[:single]
    # exact single queries are slow: time a tenth as many; exact batches get the same batch (BLAS
    # is more efficient the larger the batch, so a smaller one would sell exact search short)
    few, one_few = queries[: exact_batch or len(queries)], queries[: max(1, single // 10)]
    res = {
        "n": n, "dim": dim, "factory": factory, "nprobe": params["nprobe"], "efsearch": params["efsearch"],
        "tuned_recall_sample": params["recall"], "heldout_recall": recall, "target": target,
        "build_s": t_build, "train_s": timings.get("train_s", 0.0), "tune_s": t_tune, "truth_s": t_truth, "data_s": t_data,
        "index_mb": index_mb, "rerank": int(params.get("rerank", 0)),
        "codes_alone": codes_alone, "flat_mb": n * dim * 4 / 2**20,
        "qps_batch": qps(index, queries, T.K, True, repeats), "qps_batch_faiss": qps(raw, queries, T.K, True, repeats),
        "qps_batch_exact": qps(exact, few, T.K, True, repeats),
        # larger batches share each list among more queries (grouped search); exact gets the same batch
        "more_batches": {b: (qps(index, extra[:b], T.K, True, repeats), qps(exact, extra[:b], T.K, True, repeats))
                         for b in more_batches},
        "qps_single": qps(index, one, T.K, False, repeats), "qps_single_exact": qps(exact, one_few, T.K, False, repeats),
    }
    return res


def report(r: dict) -> None:
    sb = statistics.median(r["qps_batch"]) / statistics.median(r["qps_batch_exact"])
    ss = statistics.median(r["qps_single"]) / statistics.median(r["qps_single_exact"])
    print(f"\n== N={r['n']:,} dim={r['dim']} factory {r['factory']} nprobe {r['nprobe']} efSearch {r['efsearch']}")
    print(f"   recall@10 held-out {r['heldout_recall']:.4f} (tuning sample {r['tuned_recall_sample']:.4f}, "
          f"target {r['target']}); re-rank x{r['rerank']} (without re-ranking: {r['codes_alone']:.4f})")
    print(f"   build {r['build_s']:.1f} s (of which training on the bounded sample {r['train_s']:.1f} s), tune {r['tune_s']:.1f} s, "
          f"exact ground truth {r['truth_s']:.1f} s; index {r['index_mb']:.0f} MiB vs flat vectors {r['flat_mb']:.0f} MiB")
    sf = statistics.median(r["qps_batch_faiss"]) / statistics.median(r["qps_batch_exact"])
    print(f"   QPS batched  tuned {fmt(r['qps_batch'])}  exact {fmt(r['qps_batch_exact'])}  -> {sb:.1f}x "
          f"(FAISS's query-by-query scan of the batch: {fmt(r['qps_batch_faiss'])} -> {sf:.1f}x)")
    for b, (tuned, exact) in r["more_batches"].items():
        print(f"   QPS batch of {b:5d} tuned {fmt(tuned)}  exact {fmt(exact)}  -> "
              f"{statistics.median(tuned) / statistics.median(exact):.1f}x")
    print(f"   QPS single   tuned {fmt(r['qps_single'])}  exact {fmt(r['qps_single_exact'])}  -> {ss:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated N")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500, help="held-out queries (batched QPS, recall)")
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--target", type=float, default=T.DEFAULT_RECALL)
    ap.add_argument("--factory", default="auto", help="auto, flat, ivf, ivfpq, hnsw or a FAISS factory string")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exact-batch", type=int, default=0,
                    help="queries in the exact batched timing (default: all, as the tuned one)")
    ap.add_argument("--batches", default="",
                    help="comma-separated further batch sizes timed for tuned and exact (e.g. 100,2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="FAISS (OpenMP) threads, 0: its default. On an oversubscribed machine 1 avoids "
                         "OpenMP barriers waiting for descheduled threads, which slowed k-means 10x here")
    args = ap.parse_args()
    faiss = F.faiss_module()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} at start; memory budget {F.memory_budget() / 2**30:.1f} GiB")
    for n in (int(s) for s in args.sizes.split(",")):
        report(run(n, args.dim, args.queries, args.single, args.target, args.factory, args.repeats, args.seed,
                   args.exact_batch, [int(b) for b in args.batches.split(",") if b]))
    print(f"\nload average {os.getloadavg()[0]:.1f} at end (the machine is shared: ratios are measured side by side)")


if __name__ == "__main__":
    main()
