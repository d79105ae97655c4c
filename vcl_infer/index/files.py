"""The derived FAISS files: read and check against the catalog, write atomically, publish, rebuild."""

from __future__ import annotations

import errno
import os
import sqlite3
from typing import Any

from vcl_infer.index import faiss_ops as F
from vcl_infer.index import tuning as T
from vcl_infer.index.catalog import FILES, LEVELS, faiss_file_fix, fsync_dir
from vcl_infer.index.connection import Catalog
from vcl_infer.index.errors import IndexCorrupt
from vcl_infer.index.faults import disk_full, wal_lost_note

Problem = tuple[str, str]  # ("stale" | "corrupt", message)
Built = tuple[Any, str, dict]  # (faiss index, factory, search params as tuning.tune returns them)


class FaissFiles:
    """``clips.faiss`` / ``videos.faiss`` of one index and their loaded copies (the catalog is the
    source of truth; these files are rebuilt from it)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.path = catalog.path
        self.loaded: dict[str, Any] = {}  # level -> the faiss index searched
        self._gpu: dict[str, Any] = {}  # level -> its GPU copy, or None where there is none

    def clear(self) -> None:
        """Forget the loaded indexes (on close)."""
        self.loaded.clear()
        self._gpu.clear()

    def gpu_copy(self, level: str) -> Any:
        """The GPU copy of ``level``'s index (made on first use), or None without GPU FAISS."""
        if level not in self._gpu:
            self._gpu[level] = F.to_gpu(self.loaded[level])
        return self._gpu[level]

    def cleanup_temp(self) -> None:
        for p in self.path.glob(".*.faiss.tmp-*"):
            try:
                p.unlink()
            except OSError:
                pass

    # ------------------------------------------------------------------ reading
    def read_checked(self, level: str, meta: dict[str, str],
                     db: sqlite3.Connection | None = None) -> tuple[Any, Problem | None]:
        """Load one FAISS file and check it against ``meta``; returns (index, problem or None)."""
        name = FILES[level]
        fpath = self.path / name
        gen = int(meta["generation"])
        fgen = int(meta[f"{level}.generation"])
        if fgen < gen:
            return None, (
                "stale",
                f"{fpath}: the file is older than the catalog (generation {fgen} < {gen}; "
                "a write was interrupted)",
            )
        try:
            data = fpath.read_bytes()
        except FileNotFoundError:
            return None, ("corrupt", f"{fpath}: the file is missing")
        digest = F.sha256(data)
        if digest != meta[f"{level}.sha256"]:
            return None, (
                "corrupt",
                f"{fpath}: checksum mismatch (sha256 {digest[:12]}..., "
                f"catalog recorded {meta[f'{level}.sha256'][:12]}...)",
            )
        try:
            index = F.deserialize(data)
        except Exception as exc:
            return None, ("corrupt", f"{fpath}: FAISS cannot read the file ({exc})")
        expect = int(meta[f"{level}.count"])
        actual = self.catalog.count(level, db)
        if index.ntotal != expect or expect != actual or index.d != self.catalog.dim:
            return None, (
                "corrupt",
                f"{fpath}: holds {index.ntotal} vectors of dim {index.d}, the catalog "
                f"records {expect} and has {actual} rows of dim {self.catalog.dim}",
            )
        params = T.recorded_params(meta, level)
        F.set_search_params(index, meta[f"{level}.factory"], int(params["nprobe"]), int(params["efsearch"]))
        return index, None

    def explained(self, problem: str, fix: str) -> str:
        """A FAISS-file problem and its fix; after a lost write-ahead log, that cause first."""
        if self.catalog.wal_lost:
            return f"{wal_lost_note(self.path)}. Now {problem}. Otherwise {fix}; re-running the build re-adds the lost videos"
        return f"{problem}; {fix}"

    def load_writable(self) -> None:
        """Load both files for a writer, rebuilding one left stale by a crash; ``IndexCorrupt`` for a damaged one."""
        meta = self.catalog.read_meta()
        stale = []
        for level in LEVELS:
            index, problem = self.read_checked(level, meta)
            if problem is None:
                self.loaded[level] = index
            elif problem[0] == "stale":
                stale.append(level)
            else:
                raise IndexCorrupt(self.explained(problem[1], faiss_file_fix(FILES[level], self.path)))
        if stale:
            self.rebuild(tuple(stale))

    def load_for_reader(self) -> list[tuple[str, Problem]]:
        """Load both files as of the catalog's snapshot; the problems found (none loaded if any)."""
        problems = []
        for level in LEVELS:
            index, problem = self.read_checked(level, self.catalog.meta)
            if problem is None:
                self.loaded[level] = index
            else:
                problems.append((level, problem))
        if problems:
            self.loaded.clear()
        return problems

    def reader_fix(self, level: str, kind: str) -> str:
        """What a reader should do about a ``kind`` problem of ``level``'s file."""
        if kind == "stale":
            return (
                f"open the index for writing to finish it (e.g. `vcl-index repair {self.path}` "
                "or re-run the build), which rebuilds it from the catalog"
            )
        return faiss_file_fix(FILES[level], self.path)

    # ------------------------------------------------------------------ writing
    def _write_file(self, level: str, index: Any) -> tuple[str, int]:
        """Atomically replace one FAISS file; returns (sha256, ntotal)."""
        data = F.serialize(index)
        final = self.path / FILES[level]
        tmp = self.path / f".{FILES[level]}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise disk_full(self.path, f"writing {FILES[level]}: {exc.strerror}", catalog_committed=True) from exc
            raise
        fsync_dir(self.path)
        return F.sha256(data), int(index.ntotal)

    def publish(self, indexes: dict[str, Built]) -> None:
        """Steps 2 and 3 of a commit for the levels in ``indexes`` ({level: (index, factory, params)},
        params as :func:`tuning.tune` returns them)."""
        db = self.catalog.db
        gen = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        rows = [("rows.videos", str(db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]))]
        for level, (index, factory, params) in indexes.items():
            digest, count = self._write_file(level, index)
            rows += [
                (f"{level}.generation", str(gen)),
                (f"{level}.count", str(count)),
                (f"{level}.sha256", digest),
                (f"{level}.factory", factory),
                (f"{level}.nprobe", str(int(params["nprobe"]))),
                (f"{level}.efsearch", str(int(params["efsearch"]))),
                (f"{level}.recall", f"{float(params['recall']):.4f}"),
            ]
        with self.catalog.tx() as tx:
            tx.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)
        for level, (index, _, _) in indexes.items():
            self.loaded[level] = index
            self._gpu.pop(level, None)
        self.catalog.reload_meta()

    def build_level(self, level: str) -> Built:
        """Build ``level`` from the catalog: factory by size and memory, trained on a bounded sample,
        search parameters tuned to the target recall (:mod:`.tuning`)."""
        cat = self.catalog
        ids, vecs = cat.vectors(level)
        factory = F.effective_factory(cat.index_type, len(ids), cat.dim)
        index = F.build(factory, cat.dim, ids, vecs, F.default_nprobe(factory))
        return index, factory, T.tune(index, factory, ids, vecs, cat.target_recall)

    def rebuild(self, levels: tuple[str, ...]) -> None:
        """Rebuild ``levels`` from the catalog and publish them."""
        # bump the generation first so a crash while writing leaves the files marked stale
        with self.catalog.tx() as tx:
            tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self.publish({level: self.build_level(level) for level in levels})

