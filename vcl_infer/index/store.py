"""The video index: a SQLite catalog (source of truth, vectors included) plus derived FAISS files.

Layout of ``INDEX_DIR``::

    catalog.sqlite   videos, clips (with their float32 vectors), meta, and tombstones
    clips.faiss      the clip level's base segment (ids = clips.id), rewritten only by a compaction
    videos.faiss     the video level's base (one pooled vector per ok video, ids = videos.id)
    clips.d12-0.faiss, clips.m20-1.faiss, clips.t9-0.faiss ...
                     delta segments (one per commit, merged in tiers) and, for IVF, the trained
                     empty template; see :mod:`.segments` (IndexIDMap2 around Flat/HNSW/PQ; IVF
                     types hold the ids natively, because IndexIDMap2 around IVF maps ids wrongly
                     after remove_ids)
    .lock            flock'ed by the one writer; holds its pid

Commit protocol (crash-safe, see DESIGN.md and reliability.md C1/C2/C4), at a cost that grows
with the batch, not the index:

1. one catalog transaction with the row changes, a tombstone for every removed or replaced id
   that a segment holds, and ``generation += 1`` (the segments are now stale: their recorded
   generation is older);
2. a delta segment per level with the batch's new vectors is written to a temp name, fsync'ed,
   ``os.replace``'d and the folder fsync'ed (every 4 deltas of a tier are merged from the
   catalog's rows; when the deltas reach half the base, the level is compacted into a new base);
3. a second small transaction records each level's segments (file, size, count, CRC-32),
   generation and count, and drops the tombstones a merge made obsolete.

On open every segment's size and count are checked against the catalog and its CRC-32 either
at once (small files) or before its first answer (large, memory-mapped ones). A level left
stale by a crash between 1 and 3 is rebuilt from the catalog when the index is opened for
writing; a file whose recorded generation is current but whose bytes differ (bit rot, a
partial copy) raises :class:`IndexCorrupt` naming ``vcl-index repair``. Read-only opens
never rebuild anything. An index written before segments (one file per level, sha256) is
read as a base and rewritten as segments on its first writable open.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from vcl_infer.errors import SpecMismatch
from vcl_infer.index import faiss_ops as F
from vcl_infer.index import tuning as T
from vcl_infer.index import writer_lock
from vcl_infer.index.catalog import (
    CATALOG,
    FORMAT_VERSION,
    LEVELS,
    LOCK,
    READER_RETRY_S,
    SCHEMA,
    ClipRecord,
    VideoRecord,
    clip_checksum,
    normalise,
    path_to_db,
    video_checksum,
)
from vcl_infer.index.connection import Catalog
from vcl_infer.index.errors import EncoderMismatch, IndexCorrupt, IndexExists, IndexNotFound
from vcl_infer.index.faults import clear_wal_lost, guarded, translate, wal_was_lost
from vcl_infer.index.files import Change, Delta, FaissFiles
from vcl_infer.index.migrate import migrate
from vcl_infer.index.queries import Queries
from vcl_infer.index.recover import RECOVERED, clear_interrupted_create, finish_interrupted_swap

__all__ = ["VideoIndex", "VideoRecord", "ClipRecord"]

Batch = dict[str, list]  # level -> pending (ids, vectors) adds or removed ids


def _empty_batch() -> Batch:
    return {"clip": [], "video": []}


def _row_id(cursor: sqlite3.Cursor) -> int:
    """The id SQLite gave the row an INSERT just added."""
    assert cursor.lastrowid is not None
    return int(cursor.lastrowid)


class VideoIndex:
    """A folder holding a catalog of videos and clips and the FAISS indexes derived from it.

    Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`. Writers are exclusive
    (:class:`IndexLocked` for a second one); readers never take the lock and see the
    generation that was complete when they opened. Writes are buffered in one catalog
    transaction until :meth:`commit`; leaving a ``with`` block normally commits, leaving it
    by an exception or calling :meth:`close` discards uncommitted writes.

    The parts it holds: :attr:`catalog` (:class:`~.connection.Catalog`, the SQLite connection
    and metadata), :attr:`files` (:class:`~.files.FaissFiles`, the derived FAISS files) and
    :attr:`queries` (:class:`~.queries.Queries`, the read side).
    """

    # ------------------------------------------------------------------ opening
    def __init__(self, path: Path, writable: bool) -> None:
        self.path = Path(path)
        self.writable = writable
        self.catalog = Catalog(self.path, writable)
        self.files = FaissFiles(self.catalog)
        self.queries = Queries(self.catalog, self.files)
        self._lock_fd: int | None = None
        self._pending_add: Batch = _empty_batch()
        self._pending_remove: Batch = _empty_batch()
        self._retune = False
        self._committed = False  # this writer published a batch (see close)
        self.repair_report: dict = {}

    # the index's metadata, as the catalog holds it
    @property
    def fingerprint(self) -> str:
        return self.catalog.fingerprint

    @property
    def spec_json(self) -> str:
        return self.catalog.spec_json

    @property
    def dim(self) -> int:
        return self.catalog.dim

    @property
    def index_type(self) -> str:
        return self.catalog.index_type

    @property
    def target_recall(self) -> float:
        return self.catalog.target_recall

    @property
    def format_version(self) -> int:
        return self.catalog.format_version

    @property
    def wal_lost(self) -> bool:
        return self.catalog.wal_lost

    @classmethod
    def create(cls, path: str | os.PathLike, *, fingerprint: str, spec_json: str, dim: int,
               index_type: str | None = None, target_recall: float | None = None) -> VideoIndex:
        """Create a new, empty index in ``path`` (which must not exist or be empty).

        ``target_recall`` (default :data:`~vcl_infer.index.tuning.DEFAULT_RECALL`) is the
        recall@10 against exact search that the search parameters are tuned to.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(p.name != LOCK for p in path.iterdir())):
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
        self._lock_fd = writer_lock.acquire(path)
        try:
            self.catalog.connect()
            meta: dict[str, Any] = {
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
                meta.update({f"{level}.generation": 0, f"{level}.count": 0, f"{level}.sha256": "",
                             f"{level}.factory": "Flat", f"{level}.nprobe": 0})
            with self.catalog.tx() as tx:
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        tx.execute(stmt)
                tx.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                               [(k, str(v)) for k, v in meta.items()])
            self.catalog.load_meta()
            self.files.rebuild(LEVELS)
            # the schema into the main file now: a log lost later must not take the tables with it
            self.catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except BaseException as exc:
            self.close()
            err = translate(exc, path)
            if err is not None:
                raise err from exc
            raise
        return self

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False, fingerprint: str | None = None,
             repair: bool = False) -> VideoIndex:
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
                self._open_writer(fingerprint, repair)
            else:
                if (path / RECOVERED).exists():
                    raise IndexCorrupt(
                        f"{path}: a catalog recovery by `vcl-index repair` was interrupted; run "
                        f"`vcl-index repair {path}` again to finish it"
                    )
                self.catalog.wal_lost = wal_was_lost(path) and not writer_lock.writer_active(path)
                self._open_reader(fingerprint)
        except BaseException as exc:
            self.close()
            err = translate(exc, path, wal_lost=self.wal_lost)
            if err is not None:
                raise err from exc
            raise
        return self

    def _open_writer(self, fingerprint: str | None, repair: bool) -> None:
        self._lock_fd = writer_lock.acquire(self.path)
        finish_interrupted_swap(self.path)
        self.catalog.wal_lost = wal_was_lost(self.path)  # before connecting, which starts a new log
        self.files.cleanup_temp()
        if repair:  # connects by itself: it must get past a catalog that will not open
            from vcl_infer.index.repair import repair_index

            self.repair_report = repair_index(self.catalog, self.files)
            self.catalog.check_encoder(fingerprint)
        else:
            self.catalog.connect()
            self.catalog.load_meta()
            self.catalog.check_encoder(fingerprint)
            migrate(self.catalog)
            self.files.load_writable()
        clear_wal_lost(self.path)  # consistent again (an error above keeps the evidence)

    def _open_reader(self, fingerprint: str | None) -> None:
        deadline = time.monotonic() + READER_RETRY_S
        attempt = 0
        while True:
            attempt += 1
            self.catalog.connect()
            # one read transaction for the reader's lifetime: a consistent snapshot that
            # matches the FAISS files loaded below, whatever a writer commits meanwhile
            self.catalog.db.execute("BEGIN")
            self.catalog.load_meta()
            self.catalog.check_encoder(fingerprint)
            problems = self.files.load_for_reader()
            if not problems:
                return
            self.catalog.close()
            # a writer may be between its steps (or replaced a file after our snapshot): retry
            if attempt == 1 or (writer_lock.writer_active(self.path) and time.monotonic() < deadline):
                time.sleep(0.0 if attempt == 1 else 0.05)
                continue
            level, (kind, msg) = problems[0]
            raise IndexCorrupt(self.files.explained(msg, self.files.reader_fix(level, kind)))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, *, fingerprint: str, spec_json: str, dim: int,
                       index_type: str | None = None, target_recall: float | None = None) -> VideoIndex:
        """Open ``path`` for writing if it holds an index (checking the encoder), else create one.

        A ``target_recall`` given for an existing index replaces the recorded one; the search
        parameters are tuned to it at the next commit.
        """
        path = Path(path)
        if (path / CATALOG).is_file() and not clear_interrupted_create(path):
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

    def __enter__(self) -> VideoIndex:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self.writable and self.catalog.is_open:
                self.commit()
        finally:
            self.close()

    def close(self) -> None:
        """Release the catalog and the lock; uncommitted writes are discarded.

        A writer that committed and whose levels are small (:meth:`.FaissFiles.cheap_to_compact`)
        first merges its deltas into the base, so a small index is one file per level at rest.
        """
        if self._committed and self.catalog.is_open and not self.catalog.in_transaction:
            self._committed = False
            if self.files.cheap_to_compact():
                self.compact()
        self.catalog.close()
        self.files.clear()
        if self._lock_fd is not None:
            writer_lock.release(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ reads (see queries.py)
    @guarded
    def search(self, vectors: Any, k: int, *, level: str = "video",
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine: (scores (Q, k) float32, ids (Q, k) int64), -1 / -inf padded.

        ``level="video"`` returns video ids, ``level="clip"`` clip ids (see :meth:`clip`).
        ``nprobe`` overrides the recorded IVF setting for this call.
        """
        return self.queries.search(vectors, k, level=level, nprobe=nprobe)

    @guarded
    def video(self, id: int) -> VideoRecord:
        """The catalog record of video ``id`` (``KeyError`` when absent)."""
        return self.queries.video(id)

    def video_id(self, path: str) -> int | None:
        """Catalog id of the video stored under ``path`` (as indexed), or None."""
        return self.queries.video_id(path)

    @guarded
    def clip(self, id: int) -> ClipRecord:
        """The catalog record of clip ``id`` (``KeyError`` when absent)."""
        return self.queries.clip(id)

    @guarded
    def clips_of(self, video_id: int) -> list[ClipRecord]:
        """The clips of a video, in time order."""
        return self.queries.clips_of(video_id)

    @guarded
    def clip_vectors(self, video_id: int) -> np.ndarray:
        """The stored clip vectors of a video (``N x dim``, in time order), checked against their checksums."""
        return self.queries.clip_vectors(video_id)

    @guarded
    def known_files(self) -> dict[str, tuple[int, int, str]]:
        """{path: (size, mtime_ns, status)} of every file in the catalog, ok or failed."""
        return self.queries.known_files()

    @guarded
    def failures(self) -> list[VideoRecord]:
        """The files that could not be indexed, by path."""
        return self.queries.failures()

    @guarded
    def info(self) -> dict:
        """Counts, encoder, FAISS types and tuned search parameters (what ``vcl-index info`` shows)."""
        return self.queries.info()

    @guarded
    def verify(self) -> list[str]:
        """Check the catalog and the FAISS files on disk; a list of problems, empty when clean.

        A reader checks the current state on disk (a fresh catalog snapshot), not the
        generation it loaded when it opened.
        """
        return self.queries.verify()

    # ------------------------------------------------------------------ writes
    def _require_writable(self) -> None:
        if not self.writable or not self.catalog.is_open:
            raise PermissionError(f"{self.path}: the index is open read-only (or closed)")

    def abandon_batch(self) -> None:
        """Drop the uncommitted batch after a failed write (see :func:`faults.guarded`)."""
        if not self.catalog.is_open or not self.writable:
            return
        self.rollback()

    @guarded
    def add_video(
        self, path: str | os.PathLike, *, size: int | None, mtime_ns: int | None, content_hash: str | None,
        info: dict, video_vector: Any, clip_vectors: Any, windows: Any,
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
        stored = normalise(cv).astype("<f4")
        return self.add_stored_video(path, size, mtime_ns, content_hash, info or {},
                                     normalise(vv).astype("<f4").tobytes(),
                                     [(a, b, vec.tobytes()) for (a, b), vec in zip(windows, stored)])

    def add_stored_video(self, path: str, size: int | None, mtime_ns: int | None, content_hash: str | None,
                         info: dict, video_vector: bytes, clips: list[tuple[float, float, bytes]]) -> int:
        """Store an ok video from its vector bytes (little-endian float32, already normalised): what
        :meth:`add_video` and a merge (copying stored vectors bit for bit) use."""
        self._require_writable()
        self.catalog.begin()
        self._delete_path(path)
        db = self.catalog.db
        cur = db.execute(
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
        vid = _row_id(cur)
        clip_ids = []
        for start, end, vec in clips:
            c = db.execute(
                "INSERT INTO clips(video_id, start_sec, end_sec, vector, checksum) VALUES (?,?,?,?,?)",
                (vid, start, end, vec, clip_checksum(vec, start, end)),
            )
            clip_ids.append(_row_id(c))
        vv = np.frombuffer(video_vector, dtype="<f4").astype(np.float32).reshape(1, self.dim)
        self._pending_add["video"].append((np.array([vid], np.int64), vv))
        if clip_ids:
            cv = np.frombuffer(b"".join(c[2] for c in clips), dtype="<f4").astype(np.float32)
            self._pending_add["clip"].append((np.array(clip_ids, np.int64), cv.reshape(len(clips), self.dim)))
        return vid

    def _delete_path(self, path: str) -> bool:
        db = self.catalog.db
        row = db.execute("SELECT id, status FROM videos WHERE path = ?", (path_to_db(path),)).fetchone()
        if row is None:
            return False
        vid, status = row
        clip_ids = [r[0] for r in db.execute("SELECT id FROM clips WHERE video_id = ?", (vid,))]
        db.execute("DELETE FROM videos WHERE id = ?", (vid,))  # clips cascade
        self._pending_remove["clip"].extend(clip_ids)
        if status == "ok":
            self._pending_remove["video"].append(vid)
        return True

    @guarded
    def add_failure(self, path: str | os.PathLike, *, size: int | None, mtime_ns: int | None, error_kind: str,
                    error: str) -> int:
        """Record (or replace) a file that could not be indexed, with its error."""
        self._require_writable()
        path = os.fspath(path)
        self.catalog.begin()
        self._delete_path(path)
        cur = self.catalog.db.execute(
            "INSERT INTO videos(path, size, mtime_ns, status, error_kind, error, added_at) "
            "VALUES (?,?,?, 'failed', ?, ?, ?)",
            (path_to_db(path), size, mtime_ns, error_kind, error, time.time()),
        )
        return _row_id(cur)

    @guarded
    def remove(self, paths: str | os.PathLike | list) -> int:
        """Remove these paths (ok or failed) and their clips; returns how many were present."""
        self._require_writable()
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.catalog.begin()
        return sum(self._delete_path(os.fspath(p)) for p in paths)

    @guarded
    def commit(self) -> None:
        """Make the buffered writes durable and searchable (the three-step protocol)."""
        self._require_writable()
        if not self.catalog.in_transaction:
            if self._retune:  # a new target recall and no rows changed: re-tune on fresh files
                self.files.rebuild(LEVELS)
                self._retune = False
            return
        # step 1: rows, tombstones for removed ids a segment holds, generation bump: one transaction
        adds, removes = self._pending_add, self._pending_remove
        for level in LEVELS:
            self.files.record_tombstones(level, removes[level])
        self.catalog.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self.catalog.commit()
        self._pending_add, self._pending_remove = _empty_batch(), _empty_batch()
        # steps 2 + 3: a delta segment per level (or a compaction), then record it
        self.files.publish({level: self._updated(level, adds[level], removes[level]) for level in LEVELS})
        self._retune = False
        self._committed = True

    def _updated(self, level: str, adds: list, removes: list) -> Change:
        """What the batch does to ``level``: a delta segment with its new vectors, or a new base built
        from the catalog when its factory changes, a re-tune is due, or the deltas have grown to a
        fraction of the base (:data:`~.files.COMPACT_RATIO`)."""
        gone = set(removes)
        ids = np.concatenate([i for i, _ in adds]) if adds else np.zeros(0, np.int64)
        vecs = np.concatenate([v for _, v in adds]) if adds else np.zeros((0, self.dim), np.float32)
        keep = np.array([i not in gone for i in ids.tolist()], dtype=bool)
        ids, vecs = ids[keep], vecs[keep]  # added and replaced in the same batch: never published
        n = self.files.live_after(level, len(ids), removes)
        factory = F.effective_factory(self.index_type, n, self.dim)
        if self.files.layout(level) is None or factory != self.catalog.meta.get(f"{level}.factory") or self._retune:
            return self.files.build_level(level)
        if self.files.needs_compaction(level, len(ids)):
            return self.files.build_level(level, retrain=False)
        return Delta(ids, vecs)

    def compact(self) -> None:
        """Merge every level's deltas and tombstones into a new base now (no retraining)."""
        self._require_writable()
        if self.catalog.in_transaction:
            raise RuntimeError("commit() or rollback() the pending writes before compact()")
        with self.catalog.tx() as tx:
            tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self.files.publish({level: self.files.build_level(level, retrain=False) for level in LEVELS})

    def set_target_recall(self, target: float) -> None:
        """Record a new target recall@10; the next commit re-tunes the search parameters to it."""
        self._require_writable()
        target = T.check_recall(target)
        if target != self.target_recall:
            with self.catalog.tx() as tx:
                tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('target_recall', ?)", (str(target),))
            self.catalog.target_recall = target
            self._retune = True

    def rollback(self) -> None:
        """Discard the buffered writes."""
        self._require_writable()
        self.catalog.rollback()
        self._pending_add, self._pending_remove = _empty_batch(), _empty_batch()

    @guarded
    def repair(self) -> dict:
        """Check the catalog, fix damaged vectors where it can, rebuild both FAISS files.

        What `vcl-index repair` runs; see :func:`vcl_infer.index.repair.repair_index` for what
        is done about each kind of damage. Returns its report.
        """
        from vcl_infer.index.repair import repair_index

        self._require_writable()
        if self.catalog.in_transaction:
            raise RuntimeError("commit() or rollback() the pending writes before repair()")
        self.repair_report = repair_index(self.catalog, self.files)
        return self.repair_report
