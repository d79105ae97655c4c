"""The catalog's schema, file names, record types and small helpers shared by the index modules."""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# 1: first layout. 2: a CRC-32 per stored vector (clips.checksum, videos.vector_checksum);
# a format-1 catalog is read as is and migrated on its first writable open. The segment layout
# (meta "{level}.segments", table "tombstones") is not a format change: an index without it is
# read as one file per level and rewritten as segments on its first writable open.
FORMAT_VERSION = 2
CATALOG = "catalog.sqlite"
LOCK = ".lock"
LEVELS = ("clip", "video")
FILES = {"clip": "clips.faiss", "video": "videos.faiss"}
READER_RETRY_S = 10.0  # how long a reader waits for a writer that is mid-commit

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS videos(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT UNIQUE NOT NULL,
    size INTEGER, mtime_ns INTEGER, content_hash TEXT,
    duration REAL, fps REAL, frames INTEGER, width INTEGER, height INTEGER, backend TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error_kind TEXT, error TEXT,
    vector BLOB,
    added_at REAL,
    vector_checksum INTEGER
);
CREATE TABLE IF NOT EXISTS clips(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    start_sec REAL, end_sec REAL,
    vector BLOB NOT NULL,
    checksum INTEGER
);
CREATE INDEX IF NOT EXISTS clips_video ON clips(video_id);
CREATE INDEX IF NOT EXISTS videos_status ON videos(status);
CREATE TABLE IF NOT EXISTS tombstones(level TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY(level, id)) WITHOUT ROWID;
"""

VIDEO_COLS = (
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


def video_record(row: tuple, num_clips: int) -> VideoRecord:
    """A :class:`VideoRecord` from a row of :data:`VIDEO_COLS`."""
    return VideoRecord(row[0], path_from_db(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                       row[9], row[10], row[11], row[12], row[13], num_clips=num_clips)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def faiss_file_fix(name: str, path: Path) -> str:
    return f"run `vcl-index repair {path}` to rebuild {name} from the catalog"


# ---------------------------------------------------------------- file names in the catalog


def path_to_db(path: str) -> str | bytes:
    """How a file name is stored: as TEXT when it is valid UTF-8, else as the raw file system bytes.

    ``os.walk`` hands out a name with undecodable bytes as a str with surrogate escapes, which
    SQLite cannot store as TEXT; its bytes (``os.fsencode``) go in a BLOB instead, so the name
    round-trips exactly and still opens the file.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def path_from_db(value: str | bytes) -> str:
    """The inverse of :func:`path_to_db` (the str ``os.walk`` gave, surrogate escapes included)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def printable_path(path: str) -> str:
    """``path`` safe to print or put in JSON/HTML: undecodable bytes shown as ``\\xff``."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from os.fsdecode
        return path.encode("utf-8", "backslashreplace").decode("ascii")
    return raw.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------- vector checksums


def clip_checksum(vector: bytes, start_sec: float, end_sec: float) -> int:
    """CRC-32 of a stored clip: its vector bytes and its window (SQLite itself has no checksums)."""
    return zlib.crc32(struct.pack("<dd", float(start_sec), float(end_sec)), zlib.crc32(vector))


def video_checksum(vector: bytes) -> int:
    """CRC-32 of a stored pooled video vector."""
    return zlib.crc32(vector)


