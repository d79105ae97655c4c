"""The catalog's schema, file names, record types and small helpers shared by the index modules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


