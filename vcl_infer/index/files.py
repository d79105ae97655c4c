"""The derived FAISS files: read and check against the catalog, write atomically, publish, rebuild."""

from __future__ import annotations

import errno
import os
import sqlite3
import time

from vcl_infer.index import _faiss as F
from vcl_infer.index import tuning as T
from vcl_infer.index.catalog import (
    FILES,
    LEVELS,
    READER_RETRY_S,
    _fix,
    _fsync_dir,
)
from vcl_infer.index.errors import (
    IndexCorrupt,
)
from vcl_infer.index.faults import disk_full, wal_lost_note


class DerivedFiles:
    """Mixin of :class:`~vcl_infer.index.store.VideoIndex`: everything about ``clips.faiss`` /
    ``videos.faiss`` (the catalog is the source of truth; these files are rebuilt from it)."""

    def _cleanup_temp(self) -> None:
        for p in self.path.glob(".*.faiss.tmp-*"):
            try:
                p.unlink()
            except OSError:
                pass

    # ------------------------------------------------------------------ internals: FAISS files
    def _read_checked(self, level: str, meta: dict[str, str], db: sqlite3.Connection | None = None):
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
        actual = self._catalog_count(level, db)
        if index.ntotal != expect or expect != actual or index.d != self.dim:
            return None, (
                "corrupt",
                f"{fpath}: holds {index.ntotal} vectors of dim {index.d}, the catalog "
                f"records {expect} and has {actual} rows of dim {self.dim}",
            )
        params = T.recorded_params(meta, level)
        F.set_search_params(index, meta[f"{level}.factory"], params["nprobe"], params["efsearch"])
        return index, None

    def _explained(self, problem: str, fix: str) -> str:
        """A FAISS-file problem and its fix; after a lost write-ahead log, that cause first."""
        if self.wal_lost:
            return f"{wal_lost_note(self.path)}. Now {problem}. Otherwise {fix}; re-running the build re-adds the lost videos"
        return f"{problem}; {fix}"

    def _load_files_writable(self) -> None:
        meta = self._meta()
        stale = []
        for level in LEVELS:
            index, problem = self._read_checked(level, meta)
            if problem is None:
                self._index[level] = index
            elif problem[0] == "stale":
                stale.append(level)
            else:
                raise IndexCorrupt(self._explained(problem[1], _fix(FILES[level], self.path)))
        if stale:
            self._rebuild(tuple(stale))

    def _open_reader(self, fingerprint: str | None) -> None:
        deadline = time.monotonic() + READER_RETRY_S
        attempt = 0
        while True:
            attempt += 1
            self._connect()
            # one read transaction for the reader's lifetime: a consistent snapshot that
            # matches the FAISS files loaded below, whatever a writer commits meanwhile
            self._db.execute("BEGIN")
            self._load_meta()
            self._check_encoder(fingerprint)
            meta = self._meta_cache
            problems = []
            for level in LEVELS:
                index, problem = self._read_checked(level, meta)
                if problem is None:
                    self._index[level] = index
                else:
                    problems.append((level, problem))
            if not problems:
                return
            self._index.clear()
            self._db.close()
            self._db = None
            # a writer may be between its steps (or replaced a file after our snapshot): retry
            if attempt == 1 or (self._writer_active() and time.monotonic() < deadline):
                time.sleep(0.0 if attempt == 1 else 0.05)
                continue
            level, (kind, msg) = problems[0]
            if kind == "stale":
                fix = (
                    f"open the index for writing to finish it (e.g. `vcl-index repair {self.path}` "
                    "or re-run the build), which rebuilds it from the catalog"
                )
            else:
                fix = _fix(FILES[level], self.path)
            raise IndexCorrupt(self._explained(msg, fix))

    def _write_file(self, level: str, index) -> tuple[str, int]:
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
        _fsync_dir(self.path)
        return F.sha256(data), int(index.ntotal)

    def _publish(self, indexes: dict[str, tuple[object, str, dict]]) -> None:
        """Steps 2 and 3 of a commit for the levels in ``indexes`` ({level: (index, factory, params)},
        params as :func:`tuning.tune` returns them)."""
        gen = int(self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        rows = [("rows.videos", str(self._db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]))]
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
        with self._tx():
            self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)
        for level, (index, _, _) in indexes.items():
            self._index[level] = index
            self._gpu.pop(level, None)
        self._meta_cache = self._meta()

    def _build_level(self, level: str):
        """Build ``level`` from the catalog: factory by size and memory, trained on a bounded sample,
        search parameters tuned to the target recall (:mod:`.tuning`)."""
        ids, vecs = self._catalog_vectors(level)
        factory = F.effective_factory(self.index_type, len(ids), self.dim)
        index = F.build(factory, self.dim, ids, vecs, F.default_nprobe(factory))
        return index, factory, T.tune(index, factory, ids, vecs, self.target_recall)

    def _rebuild(self, levels) -> None:
        # bump the generation first so a crash while writing leaves the files marked stale
        with self._tx():
            self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self._publish({level: self._build_level(level) for level in levels})

