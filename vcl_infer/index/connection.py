"""The open catalog: one SQLite connection, its transactions, and the index metadata read from it.

:class:`Catalog` is the part of :class:`~vcl_infer.index.store.VideoIndex` that the FAISS files
(:mod:`.files`), the read side (:mod:`.queries`), repair, recovery, migration and merge share.
It knows nothing of FAISS.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vcl_infer.index import tuning as T
from vcl_infer.index.catalog import CATALOG, FORMAT_VERSION
from vcl_infer.index.errors import EncoderMismatch, IndexCorrupt


class Catalog:
    """The catalog of one index folder, opened read-only or for writing (the caller holds the lock).

    Attributes set by :meth:`load_meta`: ``fingerprint``, ``spec_json``, ``dim``, ``index_type``,
    ``target_recall``, ``format_version`` and ``meta`` (every meta row, as of the last load).
    """

    def __init__(self, path: Path, writable: bool) -> None:
        self.path = Path(path)
        self.writable = writable
        self.wal_lost = False  # set on open: see faults.wal_was_lost
        self.fingerprint = ""
        self.spec_json = ""
        self.dim = 0
        self.index_type = "auto"
        self.target_recall = T.DEFAULT_RECALL
        self.format_version = FORMAT_VERSION
        self.meta: dict[str, str] = {}
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ the connection
    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def db(self) -> sqlite3.Connection:
        """The connection; ``RuntimeError`` when the catalog is closed."""
        if self._conn is None:
            raise RuntimeError(f"{self.path}: the index is closed")
        return self._conn

    def connect(self) -> None:
        """Open the connection (writers in WAL mode; readers with ``mode=ro``), closing any old one."""
        self.close()
        db_path = self.path / CATALOG
        if self.writable:
            db = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
        else:
            db = sqlite3.connect(
                f"file:{db_path}?mode=ro", uri=True, timeout=30, isolation_level=None, check_same_thread=False
            )
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        self._conn = db

    def close(self) -> None:
        """Roll back whatever is uncommitted and close the connection (idempotent)."""
        if self._conn is None:
            return
        self.rollback()
        self._conn.close()
        self._conn = None

    # ------------------------------------------------------------------ transactions
    @property
    def in_transaction(self) -> bool:
        return self._conn is not None and self._conn.in_transaction

    def begin(self) -> None:
        """Start the write transaction unless one is open (writes are buffered until commit)."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on normal exit, rolled back on an exception."""
        self.begin()
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back the open transaction, if any; a failure to do so is ignored (SQLite may have already)."""
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # ------------------------------------------------------------------ metadata
    def read_meta(self, db: sqlite3.Connection | None = None) -> dict[str, str]:
        """Every meta row as it is now (in ``db``'s snapshot when given)."""
        return dict((db or self.db).execute("SELECT key, value FROM meta").fetchall())

    def reload_meta(self) -> None:
        """Refresh :attr:`meta` after a write to the meta table."""
        self.meta = self.read_meta()

    def load_meta(self) -> None:
        """Read and check the index metadata (``IndexCorrupt`` when absent or from a newer vcl)."""
        meta = self.read_meta()  # a SQLite error here is translated by the caller
        if "format_version" not in meta or "fingerprint" not in meta:
            raise IndexCorrupt(
                f"{self.path / CATALOG}: the catalog has no index metadata (an interrupted create?); "
                "delete the folder and build the index again"
            )
        if int(meta["format_version"]) > FORMAT_VERSION:
            raise IndexCorrupt(
                f"{self.path}: index format {meta['format_version']} is newer than this vcl "
                f"understands ({FORMAT_VERSION}); upgrade vcl"
            )
        self.fingerprint = meta["fingerprint"]
        self.spec_json = meta["spec_json"]
        self.dim = int(meta["dim"])
        self.index_type = meta.get("index_type", "auto")
        self.target_recall = float(meta.get("target_recall", T.DEFAULT_RECALL))
        self.format_version = int(meta["format_version"])
        self.meta = meta

    def check_encoder(self, fingerprint: str | None) -> None:
        """``EncoderMismatch`` when ``fingerprint`` is given and is not the index's."""
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise EncoderMismatch(
                f"{self.path}: the index was built with encoder {self.fingerprint[:16]}... but the model "
                f"given is {fingerprint[:16]}...; search it with the same model, or rebuild the index "
                "in a new folder with this one"
            )

    # ------------------------------------------------------------------ rows
    def count(self, level: str, db: sqlite3.Connection | None = None) -> int:
        """How many vectors ``level`` has: every clip, or every ok video."""
        db = db or self.db
        if level == "clip":
            return int(db.execute("SELECT COUNT(*) FROM clips").fetchone()[0])
        return int(db.execute("SELECT COUNT(*) FROM videos WHERE status = 'ok'").fetchone()[0])

    def vectors(self, level: str, where: str = "", args: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector of ``level`` (or those ``where`` selects), ids ascending, each checked
        against its checksum, so a damaged row is never built into a FAISS file."""
        from vcl_infer.index.checksums import bad_rows, scan

        ids, vecs, bad = scan(self.db, level, self.dim, where, args)
        if bad:
            raise IndexCorrupt(bad_rows(self.path, level, bad))
        return ids, vecs

    def vectors_of(self, level: str, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (sorted, unique, all present), checked against their
        checksums (what re-ranking reads: a damaged vector is never used to answer)."""
        from vcl_infer.index.checksums import bad_rows, scan

        found_ids, parts, bad = [], [], []
        step = 900  # bound parameters per statement
        for s in range(0, len(ids), step):
            chunk = [int(i) for i in ids[s : s + step]]
            got, vecs, bad_chunk = scan(self.db, level, self.dim, f"WHERE id IN ({','.join('?' * len(chunk))})",
                                        tuple(chunk))
            found_ids.append(got)
            parts.append(vecs)
            bad += bad_chunk
        if bad:
            raise IndexCorrupt(bad_rows(self.path, level, bad))
        got = np.concatenate(found_ids) if found_ids else np.zeros(0, np.int64)
        if len(got) != len(ids) or not np.array_equal(got, ids):
            raise IndexCorrupt(f"{self.path}: {len(ids) - len(got)} {level} id(s) found by the FAISS index are not in "
                               f"the catalog; run `vcl-index repair {self.path}`")
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
