"""Search over a level's segments minus its tombstones, answering as one FAISS index would.

IVF segments share the base's trained centroids, so their inverted lists are stacked
(``HStackInvertedLists``) under the template, which borrows the base's quantizer (delta files are
written without centroids, :mod:`.template`): one IVF search probes the same lists
as it would in one file holding every vector, with the same results. Other structures (Flat,
HNSW) are searched one segment at a time and the top-k merged by score: exact for Flat.
Tombstoned ids are excluded inside the search (an ``IDSelectorNot``), so k results are k live
ids, never fewer. A batch of queries over IVF-Flat segments is answered list by list
(:mod:`.grouped_search`: each probed list read once for all the queries that probe it), with
the same probes and the same inner products as FAISS's query-by-query scan.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vcl_infer.index import faiss_ops as F
from vcl_infer.index import grouped_search as G
from vcl_infer.index.segments import OpenSegment


class LevelView:
    """The searchable state of one level: its open segments and tombstones."""

    def __init__(self, factory: str, segments: list[OpenSegment], shell: Any | None,
                 tombstones: np.ndarray) -> None:
        self.factory = factory
        self.segments = [s for s in segments if s.index.ntotal > 0]
        self.tombstones = np.ascontiguousarray(tombstones, dtype=np.int64)
        self.ntotal = sum(s.index.ntotal for s in self.segments) - len(self.tombstones)
        self.nprobe = 0
        self.efsearch = 0
        faiss = F.faiss_module()
        self._selector = None
        if len(self.tombstones):
            self._batch = faiss.IDSelectorBatch(self.tombstones)
            self._selector = faiss.IDSelectorNot(self._batch)
        self._stacked = None
        if F.nlist_of(factory) and shell is not None and self.segments:  # deltas: searched through the shell
            self._stacked = self._stack(faiss, shell)
        self._readers = None
        if F.nlist_of(factory) and self.segments and all(G.groupable(s.index) for s in self.segments):
            self._readers = [G.InvertedListReader(s.index) for s in self.segments]

    def _stack(self, faiss, shell: Any) -> Any:
        lists = faiss.InvertedListsPtrVector()
        for s in self.segments:
            lists.push_back(faiss.extract_index_ivf(s.index).invlists)
        self._lists = lists  # the stack points into these: keep them alive with it
        self._stack_lists = faiss.HStackInvertedLists(lists.size(), lists.data())
        ivf = faiss.extract_index_ivf(shell)
        ivf.replace_invlists(self._stack_lists, False)
        ivf.ntotal = sum(s.index.ntotal for s in self.segments)
        shell.ntotal = ivf.ntotal
        return shell

    def set_params(self, nprobe: int, efsearch: int) -> None:
        """The recorded search parameters (IVF nprobe, HNSW efSearch) used when a search gives none."""
        self.nprobe, self.efsearch = int(nprobe), int(efsearch)
        for s in self.segments:
            F.set_search_params(s.index, self.factory, self.nprobe, self.efsearch)
        if self._stacked is not None:
            F.set_search_params(self._stacked, self.factory, self.nprobe, self.efsearch)

    def single(self) -> Any | None:
        """The one FAISS index this view is, when it is one (no deltas, no tombstones), e.g. for a GPU copy."""
        return self.segments[0].index if len(self.segments) == 1 and self._selector is None else None

    def search(self, q: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` live ids by inner product over every segment (raises ``SegmentDamaged`` for a
        mapped segment that fails its deferred check). A batch's exact products (the IVF quantizer,
        a Flat segment) run on BLAS from :data:`~.faiss_ops.BLAS_FROM_QUERIES` queries."""
        with F.blas_for_batch(q):
            return self._search(q, k, nprobe)

    def _search(self, q: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        lists = self._probed(q, nprobe) if any(s.per_list for s in self.segments) else None
        for s in self.segments:
            s.ensure_checked(lists)
        if not self.segments:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if self._readers is not None and self._worth_grouping(len(q), nprobe):
            probes = lists if lists is not None else self._probed(q, nprobe)
            return G.grouped_search(self._readers, q, probes, k, self.tombstones)
        params = self._params(nprobe)
        if self._stacked is not None or len(self.segments) == 1:
            index = self._stacked if self._stacked is not None else self.segments[0].index
            return index.search(q, k, params=params) if params is not None else index.search(q, k)
        parts = [s.index.search(q, k, params=params) if params is not None else s.index.search(q, k)
                 for s in self.segments]
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def _worth_grouping(self, batch: int, nprobe: int | None) -> bool:
        return G.worth_grouping(batch, self._nprobe(nprobe), F.nlist_of(self.factory) or 1, self.ntotal)

    def _probed(self, q: np.ndarray, nprobe: int | None) -> np.ndarray:
        """The inverted lists an IVF search of ``q`` probes (every segment shares the centroids)."""
        _, lists = self._ivf().quantizer.search(np.ascontiguousarray(q, dtype=np.float32), self._nprobe(nprobe))
        return lists

    def _ivf(self) -> Any:
        """The IVF index searches go through: the stacked shell, else the one segment."""
        return F.faiss_module().extract_index_ivf(self._stacked if self._stacked is not None else self.segments[0].index)

    def _nprobe(self, nprobe: int | None) -> int:
        """This search's nprobe: the call's, the recorded one, or the index's own."""
        return int(nprobe or self.nprobe or self._ivf().nprobe)

    def _params(self, nprobe: int | None) -> Any:
        faiss = F.faiss_module()
        ivf = bool(F.nlist_of(self.factory))
        if self._selector is None and (nprobe is None or not ivf):
            return None
        if ivf:
            p = faiss.SearchParametersIVF()
            p.nprobe = int(nprobe or self.nprobe or 1)
        else:
            p = faiss.SearchParameters()
        if self._selector is not None:
            p.sel = self._selector
        return p

    def ids(self) -> np.ndarray:
        """Every live id (sorted)."""
        held = [F.id_set(s.index) for s in self.segments]
        ids = np.concatenate(held) if held else np.zeros(0, np.int64)
        return np.sort(np.setdiff1d(ids, self.tombstones, assume_unique=False))

    def close(self) -> None:
        for s in self.segments:
            s.close()
