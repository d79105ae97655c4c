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
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcl_infer.errors import SpecMismatch
from vcl_infer.index import _faiss as F
from vcl_infer.index.errors import (
    EncoderMismatch,
    IndexCorrupt,
    IndexExists,
    IndexLocked,
    IndexNotFound,
)

FORMAT_VERSION = 1
CATALOG = "catalog.sqlite"
LOCK = ".lock"
LEVELS = ("clip", "video")
FILES = {"clip": "clips.faiss", "video": "videos.faiss"}
READER_RETRY_S = 10.0  # how long a reader waits for a writer that is mid-commit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS videos(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT UNIQUE NOT NULL,
    size INTEGER, mtime_ns INTEGER, content_hash TEXT,
    duration REAL, fps REAL, frames INTEGER, width INTEGER, height INTEGER, backend TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error_kind TEXT, error TEXT,
    vector BLOB,
    added_at REAL
);
CREATE TABLE IF NOT EXISTS clips(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    start_sec REAL, end_sec REAL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS clips_video ON clips(video_id);
"""

_VIDEO_COLS = (
    "id, path, size, mtime_ns, content_hash, duration, fps, frames, width, height, backend, "
    "status, error_kind, error"
)


@dataclass(frozen=True)
class VideoRecord:
    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    duration: float | None
    fps: float | None
    frames: int | None
    width: int | None
    height: int | None
    backend: str | None
    status: str
    error_kind: str | None
    error: str | None
    num_clips: int


@dataclass(frozen=True)
class ClipRecord:
    id: int
    video_id: int
    path: str
    start_sec: float
    end_sec: float


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _fix(name: str, path: Path) -> str:
    return f"run `vcl-index repair {path}` to rebuild {name} from the catalog"


class VideoIndex:
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
        self.fingerprint = ""
        self.spec_json = ""
        self.dim = 0

    @classmethod
    def create(cls, path, *, fingerprint: str, spec_json: str, dim: int, index_type: str | None = None):
        """Create a new, empty index in ``path`` (which must not exist or be empty)."""
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
        except BaseException:
            self.close()
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
                self._connect()
                self._load_meta()
                self._check_encoder(fingerprint)
                self._cleanup_temp()
                if repair:
                    self._rebuild(LEVELS)
                else:
                    self._load_files_writable()
            else:
                self._open_reader(fingerprint)
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def open_or_create(
        cls, path, *, fingerprint: str, spec_json: str, dim: int, index_type: str | None = None
    ):
        """Open ``path`` for writing if it holds an index (checking the encoder), else create one."""
        path = Path(path)
        if (path / CATALOG).is_file():
            self = cls.open(path, writable=True, fingerprint=fingerprint)
            if int(dim) != self.dim:
                self.close()
                raise EncoderMismatch(
                    f"{path}: the index holds {self.dim}-d vectors but the encoder gives {dim}-d; "
                    "rebuild the index in a new folder or use the same model"
                )
            return self
        return cls.create(path, fingerprint=fingerprint, spec_json=spec_json, dim=dim, index_type=index_type)

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
        try:
            meta = self._meta()
        except sqlite3.DatabaseError as exc:
            raise IndexCorrupt(f"{self.path / CATALOG}: cannot read the catalog ({exc})") from exc
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
        sql = (
            "SELECT id, vector FROM clips ORDER BY id"
            if level == "clip"
            else "SELECT id, vector FROM videos WHERE status = 'ok' ORDER BY id"
        )
        rows = self._db.execute(sql).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
        return ids, vecs.astype(np.float32, copy=False)

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
        F.set_search_params(index, meta[f"{level}.factory"], int(meta.get(f"{level}.nprobe", 0) or 0))
        return index, None

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
                raise IndexCorrupt(f"{problem[1]}; {_fix(FILES[level], self.path)}")
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
            raise IndexCorrupt(f"{msg}; {fix}")

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
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        _fsync_dir(self.path)
        return F.sha256(data), int(index.ntotal)

    def _publish(self, indexes: dict[str, tuple[object, str, int]]) -> None:
        """Steps 2 and 3 of a commit for the levels in ``indexes`` ({level: (index, factory, nprobe)})."""
        gen = int(self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        rows = []
        for level, (index, factory, nprobe) in indexes.items():
            digest, count = self._write_file(level, index)
            rows += [
                (f"{level}.generation", str(gen)),
                (f"{level}.count", str(count)),
                (f"{level}.sha256", digest),
                (f"{level}.factory", factory),
                (f"{level}.nprobe", str(nprobe)),
            ]
        with self._tx():
            self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)
        for level, (index, _, _) in indexes.items():
            self._index[level] = index
            self._gpu.pop(level, None)
        self._meta_cache = self._meta()

    def _build_level(self, level: str):
        ids, vecs = self._catalog_vectors(level)
        factory = F.effective_factory(self.index_type, len(ids), self.dim)
        nprobe = F.default_nprobe(factory)
        return F.build(factory, self.dim, ids, vecs, nprobe), factory, nprobe

    def _rebuild(self, levels) -> None:
        # bump the generation first so a crash while writing leaves the files marked stale
        with self._tx():
            self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self._publish({level: self._build_level(level) for level in levels})

    # ------------------------------------------------------------------ writes
    def _require_writable(self) -> None:
        if not self.writable or self._db is None:
            raise PermissionError(f"{self.path}: the index is open read-only (or closed)")

    def _delete_path(self, path: str) -> bool:
        row = self._db.execute("SELECT id, status FROM videos WHERE path = ?", (path,)).fetchone()
        if row is None:
            return False
        vid, status = row
        clip_ids = [r[0] for r in self._db.execute("SELECT id FROM clips WHERE video_id = ?", (vid,))]
        self._db.execute("DELETE FROM videos WHERE id = ?", (vid,))  # clips cascade
        self._pending_remove["clip"].extend(clip_ids)
        if status == "ok":
            self._pending_remove["video"].append(vid)
        return True

    def add_video(
        self, path, *, size, mtime_ns, content_hash, info: dict, video_vector, clip_vectors, windows
    ) -> int:
        """Add (or replace) an ok video with its pooled vector and one vector per clip window."""
        self._require_writable()
        path = str(path)
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
        vv = _normalise(vv)
        cv = _normalise(cv)
        self._begin()
        self._delete_path(path)
        info = info or {}
        cur = self._db.execute(
            "INSERT INTO videos(path, size, mtime_ns, content_hash, duration, fps, frames, width, height, "
            "backend, status, vector, added_at) VALUES (?,?,?,?,?,?,?,?,?,?, 'ok', ?, ?)",
            (
                path,
                size,
                mtime_ns,
                content_hash,
                info.get("duration"),
                info.get("fps"),
                info.get("frames"),
                info.get("width"),
                info.get("height"),
                info.get("backend"),
                vv.astype("<f4").tobytes(),
                time.time(),
            ),
        )
        vid = int(cur.lastrowid)
        clip_ids = []
        for (start, end), vec in zip(windows, cv):
            c = self._db.execute(
                "INSERT INTO clips(video_id, start_sec, end_sec, vector) VALUES (?,?,?,?)",
                (vid, start, end, vec.astype("<f4").tobytes()),
            )
            clip_ids.append(int(c.lastrowid))
        self._pending_add["video"].append((np.array([vid], np.int64), vv.reshape(1, -1)))
        if clip_ids:
            self._pending_add["clip"].append((np.array(clip_ids, np.int64), cv))
        return vid

    def add_failure(self, path, *, size, mtime_ns, error_kind: str, error: str) -> int:
        """Record (or replace) a file that could not be indexed, with its error."""
        self._require_writable()
        path = str(path)
        self._begin()
        self._delete_path(path)
        cur = self._db.execute(
            "INSERT INTO videos(path, size, mtime_ns, status, error_kind, error, added_at) "
            "VALUES (?,?,?, 'failed', ?, ?, ?)",
            (path, size, mtime_ns, error_kind, error, time.time()),
        )
        return int(cur.lastrowid)

    def remove(self, paths) -> int:
        """Remove these paths (ok or failed) and their clips; returns how many were present."""
        self._require_writable()
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._begin()
        return sum(self._delete_path(str(p)) for p in paths)

    def commit(self) -> None:
        """Make the buffered writes durable and searchable (the three-step protocol)."""
        self._require_writable()
        if not self._db.in_transaction:
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
            if index is None or factory != self._meta_cache.get(f"{level}.factory"):
                out[level] = self._build_level(level)
                continue
            try:
                if removes[level]:
                    index.remove_ids(np.array(removes[level], dtype=np.int64))
                for ids, vecs in adds[level]:
                    index.add_with_ids(vecs, ids)
                if index.ntotal != n:
                    raise RuntimeError("count drift")
                out[level] = (index, factory, int(self._meta_cache.get(f"{level}.nprobe", 0) or 0))
            except RuntimeError:  # remove not supported (HNSW) or drift: rebuild from the catalog
                out[level] = self._build_level(level)
        self._publish(out)

    def rollback(self) -> None:
        """Discard the buffered writes."""
        self._require_writable()
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._in_tx = False
        self._pending_add = {"clip": [], "video": []}
        self._pending_remove = {"clip": [], "video": []}

    def repair(self) -> None:
        """Rebuild both FAISS files from the catalog (what `vcl-index repair` runs)."""
        self._require_writable()
        if self._db.in_transaction:
            raise RuntimeError("commit() or rollback() the pending writes before repair()")
        self._rebuild(LEVELS)

    # ------------------------------------------------------------------ reads
    def search(self, vectors, k: int, *, level: str = "video", nprobe: int | None = None):
        """Top-``k`` by cosine: (scores (Q, k) float32, ids (Q, k) int64), -1 / -inf padded.

        ``level="video"`` returns video ids, ``level="clip"`` clip ids (see :meth:`clip`).
        ``nprobe`` overrides the recorded IVF setting for this call.
        """
        if level not in LEVELS:
            raise ValueError(f"level must be 'video' or 'clip', got {level!r}")
        if self._db is None:
            raise RuntimeError("the index is closed")
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise SpecMismatch(f"query of shape {q.shape} does not match the index dim {self.dim}")
        if not np.isfinite(q).all():
            raise SpecMismatch("query vectors contain NaN or inf")
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = _normalise(q)
        index = self._index[level]
        factory = self._meta_cache.get(f"{level}.factory", "Flat")
        if index.ntotal == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if nprobe is not None:
            F.set_search_params(index, factory, nprobe)
        try:
            target = index
            if level not in self._gpu:
                self._gpu[level] = F.to_gpu(index)
            if self._gpu[level] is not None and nprobe is None:
                target = self._gpu[level]
            scores, ids = target.search(q, k)
        finally:
            if nprobe is not None:
                F.set_search_params(index, factory, int(self._meta_cache.get(f"{level}.nprobe", 0) or 0))
        scores = scores.astype(np.float32, copy=False)
        ids = ids.astype(np.int64, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _num_clips(self, vid: int) -> int:
        return self._db.execute("SELECT COUNT(*) FROM clips WHERE video_id = ?", (vid,)).fetchone()[0]

    def _video_rec(self, row) -> VideoRecord:
        return VideoRecord(*row, num_clips=self._num_clips(row[0]))

    def video(self, id: int) -> VideoRecord:
        row = self._db.execute(f"SELECT {_VIDEO_COLS} FROM videos WHERE id = ?", (int(id),)).fetchone()
        if row is None:
            raise KeyError(f"no video with id {id} in {self.path}")
        return self._video_rec(row)

    def video_id(self, path: str) -> int | None:
        """Catalog id of the video stored under ``path`` (as indexed), or None."""
        row = self._db.execute("SELECT id FROM videos WHERE path = ?", (str(path),)).fetchone()
        return None if row is None else int(row[0])

    def clip(self, id: int) -> ClipRecord:
        row = self._db.execute(
            "SELECT c.id, c.video_id, v.path, c.start_sec, c.end_sec FROM clips c JOIN videos v "
            "ON v.id = c.video_id WHERE c.id = ?",
            (int(id),),
        ).fetchone()
        if row is None:
            raise KeyError(f"no clip with id {id} in {self.path}")
        return ClipRecord(*row)

    def clips_of(self, video_id: int) -> list[ClipRecord]:
        rows = self._db.execute(
            "SELECT c.id, c.video_id, v.path, c.start_sec, c.end_sec FROM clips c JOIN videos v "
            "ON v.id = c.video_id WHERE c.video_id = ? ORDER BY c.start_sec, c.id",
            (int(video_id),),
        ).fetchall()
        return [ClipRecord(*r) for r in rows]

    def clip_vectors(self, video_id: int) -> np.ndarray:
        rows = self._db.execute(
            "SELECT vector FROM clips WHERE video_id = ? ORDER BY start_sec, id", (int(video_id),)
        ).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), self.dim).copy()

    def known_files(self) -> dict[str, tuple[int, int, str]]:
        return {
            p: (s, m, st)
            for p, s, m, st in self._db.execute("SELECT path, size, mtime_ns, status FROM videos")
        }

    def failures(self) -> list[VideoRecord]:
        rows = self._db.execute(f"SELECT {_VIDEO_COLS} FROM videos WHERE status = 'failed' ORDER BY path")
        return [VideoRecord(*r, num_clips=0) for r in rows.fetchall()]

    def info(self) -> dict:
        meta = self._meta_cache
        try:
            arch = json.loads(self.spec_json or "{}")
            arch = arch.get("arch") or arch.get("architecture") if isinstance(arch, dict) else None
        except ValueError:
            arch = None
        counts = dict(self._db.execute("SELECT status, COUNT(*) FROM videos GROUP BY status").fetchall())
        size = 0
        for p in self.path.iterdir():
            if p.is_file():
                size += p.stat().st_size
        return {
            "path": str(self.path),
            "videos_ok": counts.get("ok", 0),
            "videos_failed": counts.get("failed", 0),
            "clips": self._catalog_count("clip"),
            "fingerprint": self.fingerprint,
            "arch": arch,
            "dim": self.dim,
            "index_type": self.index_type,
            "index_types": {lv: meta.get(f"{lv}.factory") for lv in LEVELS},
            "nprobe": {lv: int(meta.get(f"{lv}.nprobe", 0) or 0) for lv in LEVELS},
            "size_bytes": size,
            "generation": int(meta["generation"]),
            "format_version": int(meta["format_version"]),
        }

    def verify(self) -> list[str]:
        """Check the catalog and the FAISS files on disk; a list of problems, empty when clean.

        A reader checks the current state on disk (a fresh catalog snapshot), not the
        generation it loaded when it opened.
        """
        if self._db is None:
            raise RuntimeError("the index is closed")
        if self.writable:
            if self._db.in_transaction:
                raise RuntimeError("commit() or rollback() the pending writes before verify()")
            return self._verify(self._db, check_loaded=True)
        db = sqlite3.connect(
            f"file:{self.path / CATALOG}?mode=ro", uri=True, timeout=30, isolation_level=None
        )
        try:
            db.execute("BEGIN")
            return self._verify(db, check_loaded=False)
        finally:
            db.close()

    def _verify(self, db: sqlite3.Connection, check_loaded: bool) -> list[str]:
        problems = []
        try:
            res = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
            if res != ["ok"]:
                problems += [f"{self.path / CATALOG}: {r}" for r in res]
        except sqlite3.DatabaseError as exc:
            problems.append(f"{self.path / CATALOG}: {exc}")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        for level in LEVELS:
            index, problem = self._read_checked(level, meta, db)
            if problem is not None:
                problems.append(problem[1])
                continue
            if level == "clip":
                cat = [r[0] for r in db.execute("SELECT id FROM clips ORDER BY id")]
            else:
                cat = [r[0] for r in db.execute("SELECT id FROM videos WHERE status='ok' ORDER BY id")]
            cat = np.array(cat, dtype=np.int64)
            have = F.id_set(index)
            if len(have) != len(cat) or not np.array_equal(have, cat):
                extra = np.setdiff1d(have, cat)
                missing = np.setdiff1d(cat, have)
                problems.append(
                    f"{self.path / FILES[level]}: {len(extra)} ids not in the catalog "
                    f"(e.g. {extra[:5].tolist()}), {len(missing)} catalog rows missing (e.g. {missing[:5].tolist()})"
                )
            mem = self._index.get(level)
            if check_loaded and mem is not None and mem.ntotal != index.ntotal:
                problems.append(
                    f"{self.path / FILES[level]}: the loaded index holds {mem.ntotal} vectors, "
                    f"the file {index.ntotal}"
                )
        return problems
