"""The video index: a SQLite catalog (source of truth, vectors included) plus derived FAISS files.

Layout of ``INDEX_DIR``::

    catalog.sqlite   videos, clips (with their float32 vectors) and meta
    clips.faiss      one vector per clip, ids = clips.id
    videos.faiss     one pooled vector per ok video, ids = videos.id
                     (IndexIDMap2 around Flat/HNSW/PQ; IVF types hold the ids natively, because
                     IndexIDMap2 around IVF maps ids wrongly after remove_ids)
    .lock            flock'ed by the one writer; holds its pid

Commit protocol (crash-safe, see DESIGN.md and reliability.md C1/C2/C4):

1. one catalog transaction with the row changes and ``generation += 1`` (the FAISS files are
   now stale: their recorded generation is older);
2. each FAISS file is written to a temp name in the folder, fsync'ed, ``os.replace``'d, and
   the folder fsync'ed;
3. a second small transaction records each file's generation, vector count and sha256.

On open every file's sha256 and vector count are checked against the catalog. A file left
stale by a crash between 1 and 3 is rebuilt from the catalog when the index is opened for
writing; a file whose recorded generation is current but whose bytes differ (bit rot, a
partial copy) raises :class:`IndexCorrupt` naming ``vcl-index repair``. Read-only opens
never rebuild anything.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from vcl_infer.errors import SpecMismatch
from vcl_infer.index import _faiss as F
from vcl_infer.index import tuning as T
from vcl_infer.index.catalog import (
    _SCHEMA,
    CATALOG,
    FORMAT_VERSION,
    LEVELS,
    LOCK,
    ClipRecord,
    VideoRecord,
    _normalise,
    _pid_alive,
    clip_checksum,
    path_to_db,
    video_checksum,
)
from vcl_infer.index.errors import (
    EncoderMismatch,
    IndexCorrupt,
    IndexExists,
    IndexLocked,
    IndexNotFound,
)
from vcl_infer.index.faults import clear_wal_lost, guarded, translate, wal_was_lost
from vcl_infer.index.files import DerivedFiles
from vcl_infer.index.migrate import migrate
from vcl_infer.index.queries import Queries
from vcl_infer.index.recover import RECOVERED, finish_interrupted_swap

__all__ = ["VideoIndex", "VideoRecord", "ClipRecord"]


class VideoIndex(DerivedFiles, Queries):
    """A folder holding a catalog of videos and clips and the FAISS indexes derived from it.

    Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`. Writers are exclusive
    (:class:`IndexLocked` for a second one); readers never take the lock and see the
    generation that was complete when they opened. Writes are buffered in one catalog
    transaction until :meth:`commit`; leaving a ``with`` block normally commits, leaving it
    by an exception or calling :meth:`close` discards uncommitted writes.
    """

    # ------------------------------------------------------------------ opening
    def __init__(self, path: Path, writable: bool):
        self.path = Path(path)
        self.writable = writable
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._index: dict[str, object] = {}
        self._gpu: dict[str, object] = {}
        self._pending_add: dict[str, list] = {"clip": [], "video": []}
        self._pending_remove: dict[str, list] = {"clip": [], "video": []}
        self._in_tx = False
        self._retune = False
        self.repair_report: dict = {}
        self.fingerprint = ""
        self.spec_json = ""
        self.dim = 0
        self.wal_lost = False  # set on open: see faults.wal_was_lost

    @classmethod
    def create(cls, path, *, fingerprint: str, spec_json: str, dim: int, index_type: str | None = None,
               target_recall: float | None = None):
        """Create a new, empty index in ``path`` (which must not exist or be empty).

        ``target_recall`` (default :data:`~vcl_infer.index.tuning.DEFAULT_RECALL`) is the
        recall@10 against exact search that the search parameters are tuned to.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise IndexExists(
                f"{path}: cannot create an index here, the folder is not empty "
                "(open the existing index, or choose a new folder)"
            )
        dim = int(dim)
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if index_type and index_type != "auto":
            F.validate_factory(index_type, dim)
        target = T.check_recall(target_recall)
        path.mkdir(parents=True, exist_ok=True)
        self = cls(path, writable=True)
        self._acquire_lock()
        try:
            self._connect()
            meta = {
                "format_version": FORMAT_VERSION,
                "fingerprint": fingerprint,
                "spec_json": spec_json,
                "dim": dim,
                "index_type": index_type or "auto",
                "target_recall": target,
                "generation": 0,
                "created_at": time.time(),
            }
            for level in LEVELS:
                meta.update(
                    {
                        f"{level}.generation": 0,
                        f"{level}.count": 0,
                        f"{level}.sha256": "",
                        f"{level}.factory": "Flat",
                        f"{level}.nprobe": 0,
                    }
                )
            with self._tx():
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [(k, str(v)) for k, v in meta.items()],
                )
            self._load_meta()
            self._rebuild(("clip", "video"))
            # the schema into the main file now: a log lost later must not take the tables with it
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except BaseException as exc:
            self.close()
            err = translate(exc, path)
            if err is not None:
                raise err from exc
            raise
        return self

    @classmethod
    def open(cls, path, *, writable: bool = False, fingerprint: str | None = None, repair: bool = False):
        """Open an existing index.

        Read-only opens never modify anything and raise :class:`IndexCorrupt` (with the fix)
        for a stale or damaged FAISS file. Writable opens take the writer lock, rebuild FAISS
        files left stale by a crash, and still raise :class:`IndexCorrupt` for a damaged
        current file unless ``repair=True`` (what ``vcl-index repair`` uses), which rebuilds
        both FAISS files from the catalog without reading them.
        """
        path = Path(path)
        if not (path / CATALOG).is_file():
            raise IndexNotFound(f"{path}: no video index here (missing {CATALOG}); build one with vcl-index")
        self = cls(path, writable=writable)
        try:
            if writable:
                self._acquire_lock()
                finish_interrupted_swap(path)
                self.wal_lost = wal_was_lost(path)  # before connecting, which starts a new log
                self._cleanup_temp()
                if repair:  # connects by itself: it must get past a catalog that will not open
                    from vcl_infer.index.repair import repair_index

                    self.repair_report = repair_index(self)
                    self._check_encoder(fingerprint)
                else:
                    self._connect()
                    self._load_meta()
                    self._check_encoder(fingerprint)
                    migrate(self)
                    self._load_files_writable()
                clear_wal_lost(path)  # consistent again (an error above keeps the evidence)
            else:
                if (path / RECOVERED).exists():
                    raise IndexCorrupt(
                        f"{path}: a catalog recovery by `vcl-index repair` was interrupted; run "
                        f"`vcl-index repair {path}` again to finish it"
                    )
                self.wal_lost = wal_was_lost(path) and not self._writer_active()
                self._open_reader(fingerprint)
        except BaseException as exc:
            self.close()
            err = translate(exc, path, wal_lost=self.wal_lost)
            if err is not None:
                raise err from exc
            raise
        return self

    @classmethod
    def open_or_create(
        cls, path, *, fingerprint: str, spec_json: str, dim: int, index_type: str | None = None,
        target_recall: float | None = None,
    ):
        """Open ``path`` for writing if it holds an index (checking the encoder), else create one.

        A ``target_recall`` given for an existing index replaces the recorded one; the search
        parameters are tuned to it at the next commit.
        """
        path = Path(path)
        if (path / CATALOG).is_file():
            self = cls.open(path, writable=True, fingerprint=fingerprint)
            if int(dim) != self.dim:
                self.close()
                raise EncoderMismatch(
                    f"{path}: the index holds {self.dim}-d vectors but the encoder gives {dim}-d; "
                    "rebuild the index in a new folder or use the same model"
                )
            if target_recall is not None:
                self.set_target_recall(target_recall)
            return self
        return cls.create(path, fingerprint=fingerprint, spec_json=spec_json, dim=dim, index_type=index_type,
                          target_recall=target_recall)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self.writable and self._db is not None:
                self.commit()
        finally:
            self.close()

    def close(self) -> None:
        """Release the catalog and the lock; uncommitted writes are discarded."""
        if self._db is not None:
            try:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None
        self._index.clear()
        self._gpu.clear()
        if self._lock_fd is not None:
            try:
                os.ftruncate(self._lock_fd, 0)
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals: plumbing
    def _acquire_lock(self) -> None:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = self._lock_pid()
            who = f"process {pid}" if pid else "another process"
            raise IndexLocked(
                f"{self.path}: the index is being written by {who}; only one writer at a time "
                "(wait for it to finish; searching works meanwhile)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _lock_pid(self) -> int:
        try:
            return int((self.path / LOCK).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _writer_active(self) -> bool:
        pid = self._lock_pid()
        return pid != os.getpid() and _pid_alive(pid)

    def _connect(self) -> None:
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
        self._db = db

    class _Tx:
        def __init__(self, owner):
            self.owner = owner

        def __enter__(self):
            self.owner._begin()

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                self.owner._db.execute("COMMIT")
            else:
                self.owner._db.execute("ROLLBACK")
            self.owner._in_tx = False

    def _tx(self):
        return self._Tx(self)

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        self._in_tx = True

    def _meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _load_meta(self) -> None:
        meta = self._meta()  # a SQLite error here is translated by open()
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
        self._meta_cache = meta

    def _check_encoder(self, fingerprint: str | None) -> None:
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise EncoderMismatch(
                f"{self.path}: the index was built with encoder {self.fingerprint[:16]}... but the model "
                f"given is {fingerprint[:16]}...; search it with the same model, or rebuild the index "
                "in a new folder with this one"
            )

    def _catalog_count(self, level: str, db: sqlite3.Connection | None = None) -> int:
        db = db or self._db
        if level == "clip":
            return db.execute("SELECT COUNT(*) FROM clips").fetchone()[0]
        return db.execute("SELECT COUNT(*) FROM videos WHERE status = 'ok'").fetchone()[0]

    def _catalog_vectors(self, level: str) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector of ``level`` (ids ascending), each checked against its checksum, so a
        damaged row is never built into a FAISS file."""
        from vcl_infer.index.checksums import bad_rows, scan

        ids, vecs, bad = scan(self._db, level, self.dim)
        if bad:
            raise IndexCorrupt(bad_rows(self.path, level, bad))
        return ids, vecs


    # ------------------------------------------------------------------ writes
    def _require_writable(self) -> None:
        if not self.writable or self._db is None:
            raise PermissionError(f"{self.path}: the index is open read-only (or closed)")

    def _abandon_batch(self) -> None:
        """Drop the uncommitted batch after a failed write (see :func:`faults.guarded`)."""
        if self._db is None or not self.writable:
            return
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._in_tx = False
        self._pending_add = {"clip": [], "video": []}
        self._pending_remove = {"clip": [], "video": []}

    def _delete_path(self, path: str) -> bool:
        row = self._db.execute("SELECT id, status FROM videos WHERE path = ?", (path_to_db(path),)).fetchone()
        if row is None:
            return False
        vid, status = row
        clip_ids = [r[0] for r in self._db.execute("SELECT id FROM clips WHERE video_id = ?", (vid,))]
        self._db.execute("DELETE FROM videos WHERE id = ?", (vid,))  # clips cascade
        self._pending_remove["clip"].extend(clip_ids)
        if status == "ok":
            self._pending_remove["video"].append(vid)
        return True

    @guarded
    def add_video(
        self, path, *, size, mtime_ns, content_hash, info: dict, video_vector, clip_vectors, windows
    ) -> int:
        """Add (or replace) an ok video with its pooled vector and one vector per clip window.

        The vectors are stored L2-normalised, each with a CRC-32 (:mod:`.checksums`).
        """
        self._require_writable()
        path = os.fspath(path)
        vv = np.asarray(video_vector, dtype=np.float32).reshape(-1)
        cv = np.asarray(clip_vectors, dtype=np.float32)
        if cv.size == 0:
            cv = cv.reshape(0, self.dim)
        windows = [(float(a), float(b)) for a, b in windows]
        if vv.shape != (self.dim,) or cv.ndim != 2 or cv.shape[1] != self.dim:
            raise SpecMismatch(
                f"{path}: vectors of shape {vv.shape} / {cv.shape} do not match the index dim {self.dim}"
            )
        if len(windows) != len(cv):
            raise ValueError(f"{path}: {len(cv)} clip vectors but {len(windows)} windows")
        if not (np.isfinite(vv).all() and np.isfinite(cv).all()):
            raise SpecMismatch(f"{path}: the encoder produced non-finite values (NaN/inf); not indexed")
        vv = _normalise(vv).astype("<f4").tobytes()
        cv = _normalise(cv).astype("<f4")
        return self._insert_video(path, size, mtime_ns, content_hash, info or {}, vv,
                                  [(a, b, vec.tobytes()) for (a, b), vec in zip(windows, cv)])

    def _insert_video(self, path: str, size, mtime_ns, content_hash, info: dict, video_vector: bytes,
                      clips: list[tuple[float, float, bytes]]) -> int:
        """Store an ok video from its vector bytes (little-endian float32, already normalised)."""
        self._begin()
        self._delete_path(path)
        cur = self._db.execute(
            "INSERT INTO videos(path, size, mtime_ns, content_hash, duration, fps, frames, width, height, "
            "backend, status, vector, added_at, vector_checksum) VALUES (?,?,?,?,?,?,?,?,?,?, 'ok', ?, ?, ?)",
            (
                path_to_db(path),
                size,
                mtime_ns,
                content_hash,
                info.get("duration"),
                info.get("fps"),
                info.get("frames"),
                info.get("width"),
                info.get("height"),
                info.get("backend"),
                video_vector,
                time.time(),
                video_checksum(video_vector),
            ),
        )
        vid = int(cur.lastrowid)
        clip_ids = []
        for start, end, vec in clips:
            c = self._db.execute(
                "INSERT INTO clips(video_id, start_sec, end_sec, vector, checksum) VALUES (?,?,?,?,?)",
                (vid, start, end, vec, clip_checksum(vec, start, end)),
            )
            clip_ids.append(int(c.lastrowid))
        vv = np.frombuffer(video_vector, dtype="<f4").astype(np.float32).reshape(1, self.dim)
        self._pending_add["video"].append((np.array([vid], np.int64), vv))
        if clip_ids:
            cv = np.frombuffer(b"".join(c[2] for c in clips), dtype="<f4").astype(np.float32)
            self._pending_add["clip"].append((np.array(clip_ids, np.int64), cv.reshape(len(clips), self.dim)))
        return vid

    @guarded
    def add_failure(self, path, *, size, mtime_ns, error_kind: str, error: str) -> int:
        """Record (or replace) a file that could not be indexed, with its error."""
        self._require_writable()
        path = os.fspath(path)
        self._begin()
        self._delete_path(path)
        cur = self._db.execute(
            "INSERT INTO videos(path, size, mtime_ns, status, error_kind, error, added_at) "
            "VALUES (?,?,?, 'failed', ?, ?, ?)",
            (path_to_db(path), size, mtime_ns, error_kind, error, time.time()),
        )
        return int(cur.lastrowid)

    @guarded
    def remove(self, paths) -> int:
        """Remove these paths (ok or failed) and their clips; returns how many were present."""
        self._require_writable()
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._begin()
        return sum(self._delete_path(os.fspath(p)) for p in paths)

    @guarded
    def commit(self) -> None:
        """Make the buffered writes durable and searchable (the three-step protocol)."""
        self._require_writable()
        if not self._db.in_transaction:
            if self._retune:  # a new target recall and no rows changed: re-tune on fresh files
                self._rebuild(LEVELS)
                self._retune = False
            return
        # step 1: rows + generation bump, one transaction
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self._db.execute("COMMIT")
        self._in_tx = False
        adds, removes = self._pending_add, self._pending_remove
        self._pending_add = {"clip": [], "video": []}
        self._pending_remove = {"clip": [], "video": []}
        # step 2 + 3: update the FAISS indexes in memory, then publish both files
        out = {}
        for level in LEVELS:
            n = self._catalog_count(level)
            factory = F.effective_factory(self.index_type, n, self.dim)
            index = self._index.get(level)
            if index is None or factory != self._meta_cache.get(f"{level}.factory") or self._retune:
                out[level] = self._build_level(level)
                continue
            try:
                if removes[level]:
                    index.remove_ids(np.array(removes[level], dtype=np.int64))
                for ids, vecs in adds[level]:
                    index.add_with_ids(vecs, ids)
                if index.ntotal != n:
                    raise RuntimeError("count drift")
                out[level] = (index, factory, T.recorded_params(self._meta_cache, level))
            except RuntimeError:  # remove not supported (HNSW) or drift: rebuild from the catalog
                out[level] = self._build_level(level)
        self._publish(out)
        self._retune = False

    def set_target_recall(self, target: float) -> None:
        """Record a new target recall@10; the next commit re-tunes the search parameters to it."""
        self._require_writable()
        target = T.check_recall(target)
        if target != self.target_recall:
            with self._tx():
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('target_recall', ?)",
                                 (str(target),))
            self.target_recall = target
            self._retune = True

    def rollback(self) -> None:
        """Discard the buffered writes."""
        self._require_writable()
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._in_tx = False
        self._pending_add = {"clip": [], "video": []}
        self._pending_remove = {"clip": [], "video": []}

    @guarded
    def repair(self) -> dict:
        """Check the catalog, fix damaged vectors where it can, rebuild both FAISS files.

        What `vcl-index repair` runs; see :func:`vcl_infer.index.repair.repair_index` for what
        is done about each kind of damage. Returns its report.
        """
        from vcl_infer.index.repair import repair_index

        self._require_writable()
        if self._db.in_transaction:
            raise RuntimeError("commit() or rollback() the pending writes before repair()")
        self.repair_report = repair_index(self)
        return self.repair_report

