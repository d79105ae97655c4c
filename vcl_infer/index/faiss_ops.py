"""FAISS helpers: factory choice, building from stored vectors, (de)serialisation, GPU search.

faiss is imported lazily (``vcl_infer._optional.require``) so that importing the index package
costs nothing until an index is used.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from vcl_infer._optional import require
from vcl_infer.index.centroids import ivf_centroids

FLAT_MAX = 50_000  # below this many vectors an exact Flat index is fast enough
IVF_FLAT_MAX = 3_000_000  # above this (or above the memory budget), IVF+PQ to bound memory
IVF_MIN_POINTS_PER_LIST = 39  # faiss k-means wants >= 39 training points per centroid
TRAIN_POINTS_PER_LIST = 30  # training subsample size per IVF list (bounded build time)
PQ_MIN_TRAIN = 10_000
TRAIN_SEED = 1234
MEMORY_ENV = "VCL_INDEX_MEMORY_GB"  # the memory the index may take; default a quarter of the RAM
# FAISS's exact k-NN (a Flat index, an IVF quantizer) takes its BLAS path from queries x dim >=
# distance_compute_blas_threshold, 128,000 in faiss 1.15: 250 queries at 512-d. Below that it scans
# query by query. One core, 512-d: BLAS was as fast from 8 queries on a 244-vector list and 1.5x
# faster from 16, and 4.9x faster for 20 queries over 8192 IVF centroids (a batch of 100 over the
# 1M index ran at single-query speed, 13.8x exact search, until its quantizer took BLAS)
BLAS_FROM_QUERIES = 8
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = 0


def faiss_module():
    return require("faiss")


@contextmanager
def blas_for_batch(q: np.ndarray) -> Iterator[None]:
    """FAISS's exact k-NN on BLAS from :data:`BLAS_FROM_QUERIES` queries while this batch ``q`` is
    searched (nothing changes for a smaller one; nested and concurrent holders share the setting),
    then the threshold restored.

    The threshold is process-wide: searches running meanwhile in other threads take the BLAS path
    from that size too, which changes their speed and the last bits of their scores, never which
    neighbours they find beyond exact ties.
    """
    global _blas_users, _blas_saved
    if len(q) < BLAS_FROM_QUERIES:
        yield
        return
    cvar = faiss_module().cvar
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = int(cvar.distance_compute_blas_threshold)
            cvar.distance_compute_blas_threshold = min(_blas_saved, BLAS_FROM_QUERIES * int(q.shape[1]))
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                cvar.distance_compute_blas_threshold = _blas_saved


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def memory_budget() -> int:
    """Bytes the vectors of one index level may take in memory (``$VCL_INDEX_MEMORY_GB``, else RAM / 4)."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        return int(float(env) * 2**30)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError):
        return 4 * 2**30


def pq_bytes(dim: int, n: int, budget: int) -> int:
    """Bytes per vector of the PQ code: ``dim / 4`` (16x smaller than float32 vectors) or fewer when
    even that does not fit ``budget``; always a divisor of ``dim`` and at least 8 (or ``dim``)."""
    m = max(1, dim // 4)
    while m > 8 and n * m > budget:
        m //= 2
    while dim % m:
        m -= 1
    return m


def ivf_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: the power of two nearest ``8 sqrt(n)`` (FAISS's guideline is 4 to 16
    sqrt(n)), 256 to 65536: 2048 at 100k, 8192 at 1M. Lists should be no coarser than the data's
    clusters: at 1M the benchmark's 10,000 clusters in 4096 lists kept a long tail of a query's
    top-10 in far lists (recall@10 0.95 at nprobe 32, 0.97 at 128), in 8192 lists 0.96 at nprobe 2;
    with sqrt(n) (1024 at 1M) a cluster's vectors spread over many lists (nprobe 384 for 0.986)."""
    return min(max(_pow2(8 * math.sqrt(n)), 256), 65536)


def choose_factory(n: int, dim: int, memory_bytes: int | None = None) -> str:
    """The FAISS factory string for an index of ``n`` vectors of dimension ``dim``, by size and memory.

    ``Flat`` (exact) below 50k vectors; ``IVF{nlist},Flat`` while the float32 vectors fit the
    memory budget (:func:`memory_budget`) and n <= 3M; else ``IVF{nlist},PQ{m}`` (m bytes a
    vector, :func:`pq_bytes`). nlist is :func:`ivf_nlist` (a power of two, so the choice changes,
    and the index is retrained, only when the collection roughly quadruples); its centroids come from
    two-level k-means on a bounded sample (30 points a list, :mod:`.centroids`).
    The search parameter (nprobe) is then tuned to the target recall.
    """
    if n < FLAT_MAX:
        return "Flat"
    budget = memory_budget() if memory_bytes is None else memory_bytes
    nlist = ivf_nlist(n)
    if n <= IVF_FLAT_MAX and n * dim * 4 <= budget:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{pq_bytes(dim, n, budget)}"


def nlist_of(factory: str) -> int | None:
    m = re.search(r"IVF(\d+)", factory)
    return int(m.group(1)) if m else None


def nlist_of_index(index) -> int:
    """The number of inverted lists of an IVF index (0 for any other structure)."""
    faiss = faiss_module()
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except Exception:  # not an IVF index
        return 0


def min_train_points(factory: str) -> int:
    """How many vectors ``factory`` needs before it can be trained (0: no training)."""
    need = 0
    nlist = nlist_of(factory)
    if nlist:
        need = max(need, IVF_MIN_POINTS_PER_LIST * nlist)
    if re.search(r"PQ\d+", factory):
        need = max(need, PQ_MIN_TRAIN)
    return need


FAMILIES = ("flat", "ivf", "ivfpq", "hnsw")  # --index-type shorthands, sized like "auto"


def _family(requested: str) -> str | None:
    name = requested.lower().replace("-", "").replace("_", "").replace(",", "")
    return name if name in FAMILIES else None


def effective_factory(requested: str | None, n: int, dim: int) -> str:
    """The factory actually built for ``n`` vectors.

    ``None``/``"auto"`` follows :func:`choose_factory`; a family name (``flat``, ``ivf``,
    ``ivf-pq``, ``hnsw``) picks that structure with sizes chosen as ``auto`` would; anything
    else is a FAISS factory string used as given. A structure that needs training falls back
    to exact ``Flat`` until there are enough vectors to train it.
    """
    if not requested or requested == "auto":
        return choose_factory(n, dim)
    family = _family(requested)
    if family is not None:
        nlist = ivf_nlist(n)
        requested = {
            "flat": "Flat",
            "ivf": f"IVF{nlist},Flat",
            "ivfpq": f"IVF{nlist},PQ{pq_bytes(dim, n, memory_budget())}",
            "hnsw": "HNSW32",
        }[family]
    if n < min_train_points(requested):
        return "Flat"
    return requested


def default_nprobe(factory: str) -> int:
    nlist = nlist_of(factory)
    if not nlist:
        return 0
    return int(min(nlist, max(16, nlist // 16)))


def validate_factory(factory: str, dim: int) -> None:
    """Raise ``ValueError`` naming the string when faiss cannot build ``factory``."""
    if not factory or factory == "auto" or _family(factory):
        return
    faiss = faiss_module()
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except Exception as exc:  # faiss raises RuntimeError with a C++ message
        raise ValueError(f"invalid FAISS index type {factory!r} for dim {dim}: {exc}") from exc


def set_search_params(index, factory: str, nprobe: int | None, efsearch: int | None = None) -> None:
    """Set an IVF index's ``nprobe`` / an HNSW index's ``efSearch`` (0 or None: leave as is; HNSW
    without a tuned value gets at least 64)."""
    faiss = faiss_module()
    if nlist_of(factory) and nprobe:
        try:
            faiss.extract_index_ivf(index).nprobe = int(nprobe)
        except Exception:
            pass
    if "HNSW" in factory:
        inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
        hnsw = getattr(inner, "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = int(efsearch) if efsearch else max(hnsw.efSearch, 64)


def train_empty(factory: str, dim: int, vectors: np.ndarray):
    """An empty index of ``factory`` (inner product), trained when it needs training on a bounded
    sample of ``vectors`` (30 a list, at least 10k for PQ; IVF centroids by two-level k-means,
    :mod:`.centroids`): what every segment of a level is made from.

    Non-IVF structures come wrapped in an ``IndexIDMap2``; IVF indexes store ids natively.
    """
    faiss = faiss_module()
    base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    # IVF indexes store ids natively (add_with_ids / remove_ids are exact). Wrapping them in an
    # IndexIDMap2 is WRONG after remove_ids: IVF does not renumber the positions it stores while
    # the id map compacts, so later results map to the wrong ids (found by our tests, faiss 1.15).
    index = base if nlist_of(factory) else faiss.IndexIDMap2(base)
    if not base.is_trained:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        nlist = nlist_of(factory) or 1
        n_train = min(len(vectors), max(TRAIN_POINTS_PER_LIST * nlist, PQ_MIN_TRAIN))
        if n_train < len(vectors):
            rng = np.random.default_rng(TRAIN_SEED)
            sample = vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))]
        else:
            sample = vectors
        if nlist_of(factory):  # centroids placed first: FAISS then trains only what encodes the vectors (PQ)
            faiss.extract_index_ivf(base).quantizer.add(ivf_centroids(sample, nlist, TRAIN_SEED))
        base.train(np.ascontiguousarray(sample))
    return index


def add_all(index, ids: np.ndarray, vectors: np.ndarray):
    """Add ``vectors`` with ``ids`` to ``index`` in chunks; returns ``index``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, index.d)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    step = 262_144
    for s in range(0, len(ids), step):
        index.add_with_ids(vectors[s : s + step], ids[s : s + step])
    return index


def build(factory: str, dim: int, ids: np.ndarray, vectors: np.ndarray, nprobe: int | None = None,
          timings: dict | None = None):
    """An index of ``factory`` (inner product), trained when needed (:func:`train_empty`), holding ``vectors``.

    ``timings``, when given, receives ``train_s`` and ``add_s``.
    """
    import time

    t0 = time.perf_counter()
    index = train_empty(factory, dim, vectors)
    t1 = time.perf_counter()
    set_search_params(index, factory, nprobe)
    add_all(index, ids, vectors)
    if timings is not None:
        timings.update(train_s=t1 - t0, add_s=time.perf_counter() - t1)
    return index


def has_centroids(index) -> bool:
    """Whether an IVF index carries its trained quantizer (a delta segment or a template does not)."""
    return faiss_module().extract_index_ivf(index).quantizer.ntotal > 0


def share_quantizer(index, owner) -> None:
    """Point IVF ``index`` at the trained quantizer of ``owner`` (an IVF index) without copying it.

    Delta segments and templates are stored without their centroids (the base holds them: at 1M
    vectors 8 MiB a file); this gives one back for adding or searching. ``owner`` is kept alive
    with ``index``; the placeholder quantizer ``index`` owned is freed.
    """
    faiss = faiss_module()
    ivf = faiss.extract_index_ivf(index)
    old, owned = ivf.quantizer, ivf.own_fields
    ivf.own_fields = False
    ivf.quantizer = faiss.extract_index_ivf(owner).quantizer
    if owned:
        _free_quantizer(old)
    _keep_alive(index, owner)


def drop_quantizer(index) -> None:
    """Replace IVF ``index``'s quantizer by an empty one of the same metric: what is written for a
    delta segment or a template (:func:`share_quantizer` gives the centroids back)."""
    faiss = faiss_module()
    ivf = faiss.extract_index_ivf(index)
    old, owned = ivf.quantizer, ivf.own_fields
    empty = faiss.IndexFlat(ivf.d, ivf.metric_type)  # owned by Python, kept alive with the index
    ivf.own_fields = False
    ivf.quantizer = empty
    if owned:
        _free_quantizer(old)
    _keep_alive(index, empty)


def _keep_alive(index, obj) -> None:
    # faiss's own idiom: Python objects a faiss object points to, kept alive with its proxy
    index.referenced_objects = [*getattr(index, "referenced_objects", []), obj]


def _free_quantizer(quantizer) -> None:
    """Delete a quantizer that an index owned, through a throw-away IVF index that owns it (a C++
    destructor frees it; handing a borrowed SWIG pointer to Python's ownership corrupted memory)."""
    faiss = faiss_module()
    holder = faiss.IndexIVFFlat(quantizer, quantizer.d, 1, quantizer.metric_type)
    holder.own_fields = True
    del holder


def serialize(index) -> bytes:
    return faiss_module().serialize_index(index).tobytes()


def deserialize(data: bytes):
    faiss = faiss_module()
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    return index  # the swig wrapper already returns the concrete class


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def id_set(index) -> np.ndarray:
    """The ids an index holds (sorted): the id map of an ``IndexIDMap2``, or an IVF's lists."""
    faiss = faiss_module()
    if hasattr(index, "id_map"):
        return np.sort(faiss.vector_to_array(index.id_map).astype(np.int64))
    ivf = faiss.extract_index_ivf(index)
    inv = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        n = inv.list_size(lst)
        if n:
            parts.append(faiss.rev_swig_ptr(inv.get_ids(lst), n).copy())
    return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, np.int64)


def to_gpu(index):
    """A GPU copy of ``index`` for search when GPU FAISS is present, else ``None``."""
    faiss = faiss_module()
    try:
        if getattr(faiss, "get_num_gpus", lambda: 0)() <= 0 or index.ntotal == 0:
            return None
        return faiss.index_cpu_to_all_gpus(index)
    except Exception:  # index type not supported on GPU (HNSW, ...): search on CPU
        return None
