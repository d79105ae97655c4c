"""Read side of the index: search, record lookups, info and verification."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import numpy as np

from vcl_infer.errors import SpecMismatch
from vcl_infer.index.catalog import (
    CATALOG,
    FILES,
    LEVELS,
    VIDEO_COLS,
    ClipRecord,
    VideoRecord,
    normalise,
    path_from_db,
    path_to_db,
    video_record,
)
from vcl_infer.index.checksums import bad_rows, check_rows, verify_vectors
from vcl_infer.index.connection import Catalog
from vcl_infer.index.errors import IndexCorrupt
from vcl_infer.index.files import FaissFiles
from vcl_infer.index.rerank import rerank
from vcl_infer.index.segments import SegmentDamaged


class Queries:
    """The read-only API of :class:`~vcl_infer.index.store.VideoIndex` over its catalog and FAISS files.

    Holds no state of its own; :class:`VideoIndex` calls it under :func:`~.faults.guarded`.
    """

    def __init__(self, catalog: Catalog, files: FaissFiles) -> None:
        self.catalog = catalog
        self.files = files
        self.path = catalog.path

    def search(self, vectors: Any, k: int, *, level: str = "video",
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine: (scores (Q, k) float32, ids (Q, k) int64), -1 / -inf padded.

        ``level="video"`` returns video ids, ``level="clip"`` clip ids (see :meth:`clip`).
        ``nprobe`` overrides the recorded IVF setting for this call.
        """
        if level not in LEVELS:
            raise ValueError(f"level must be 'video' or 'clip', got {level!r}")
        if not self.catalog.is_open:
            raise RuntimeError("the index is closed")
        dim = self.catalog.dim
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != dim:
            raise SpecMismatch(f"query of shape {q.shape} does not match the index dim {dim}")
        if not np.isfinite(q).all():
            raise SpecMismatch("query vectors contain NaN or inf")
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = normalise(q)
        view = self.files.loaded[level]
        if view.ntotal == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        factor = int(self.catalog.meta.get(f"{level}.rerank", 0) or 0)  # exact re-ranking (PQ), see rerank.py
        wanted = k * factor if factor else k
        gpu = self.files.gpu_copy(level) if nprobe is None else None
        try:
            scores, ids = gpu.search(q, wanted) if gpu is not None else view.search(q, wanted, nprobe)
        except SegmentDamaged as exc:  # a mapped segment failed its deferred check: never answered
            raise self.files.damaged(exc, level) from None
        if factor:
            scores, ids = rerank(q, ids, lambda wanted_ids: self.catalog.vectors_of(level, wanted_ids), k)
        scores = scores.astype(np.float32, copy=False)
        ids = ids.astype(np.int64, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _num_clips(self, vid: int) -> int:
        return int(self.catalog.db.execute("SELECT COUNT(*) FROM clips WHERE video_id = ?", (vid,)).fetchone()[0])

    def _video_rec(self, row: tuple) -> VideoRecord:
        return video_record(row, self._num_clips(row[0]))

    def video(self, id: int) -> VideoRecord:
        row = self.catalog.db.execute(f"SELECT {VIDEO_COLS} FROM videos WHERE id = ?", (int(id),)).fetchone()
        if row is None:
            raise KeyError(f"no video with id {id} in {self.path}")
        return self._video_rec(row)

    def video_id(self, path: str) -> int | None:
        """Catalog id of the video stored under ``path`` (as indexed), or None."""
        row = self.catalog.db.execute("SELECT id FROM videos WHERE path = ?", (path_to_db(os.fspath(path)),)).fetchone()
        return None if row is None else int(row[0])

    def clip(self, id: int) -> ClipRecord:
        row = self.catalog.db.execute(
            "SELECT c.id, c.video_id, v.path, c.start_sec, c.end_sec FROM clips c JOIN videos v "
            "ON v.id = c.video_id WHERE c.id = ?",
            (int(id),),
        ).fetchone()
        if row is None:
            raise KeyError(f"no clip with id {id} in {self.path}")
        return ClipRecord(row[0], row[1], path_from_db(row[2]), row[3], row[4])

    def clips_of(self, video_id: int) -> list[ClipRecord]:
        rows = self.catalog.db.execute(
            "SELECT c.id, c.video_id, v.path, c.start_sec, c.end_sec FROM clips c JOIN videos v "
            "ON v.id = c.video_id WHERE c.video_id = ? ORDER BY c.start_sec, c.id",
            (int(video_id),),
        ).fetchall()
        return [ClipRecord(r[0], r[1], path_from_db(r[2]), r[3], r[4]) for r in rows]

    def clip_vectors(self, video_id: int) -> np.ndarray:
        """The stored clip vectors of a video (``N x dim``, in time order), checked against their checksums."""
        bad = check_rows(self.catalog.db, "clip", self.catalog.dim, "WHERE video_id = ?", (int(video_id),))
        if bad:
            raise IndexCorrupt(bad_rows(self.path, "clip", bad))
        rows = self.catalog.db.execute(
            "SELECT vector FROM clips WHERE video_id = ? ORDER BY start_sec, id", (int(video_id),)
        ).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), self.catalog.dim).copy()

    def known_files(self) -> dict[str, tuple[int, int, str]]:
        """{path: (size, mtime_ns, status)} of every file in the catalog, ok or failed."""
        return {
            path_from_db(p): (s, m, st)
            for p, s, m, st in self.catalog.db.execute("SELECT path, size, mtime_ns, status FROM videos")
        }

    def failures(self) -> list[VideoRecord]:
        rows = self.catalog.db.execute(f"SELECT {VIDEO_COLS} FROM videos WHERE status = 'failed' ORDER BY path")
        return [video_record(r, 0) for r in rows.fetchall()]

    def info(self) -> dict:
        cat = self.catalog
        meta = cat.meta
        arch: Any
        try:
            arch = json.loads(cat.spec_json or "{}")
            arch = arch.get("arch") or arch.get("architecture") if isinstance(arch, dict) else None
        except ValueError:
            arch = None
        counts = dict(self.catalog.db.execute("SELECT status, COUNT(*) FROM videos GROUP BY status").fetchall())
        size = 0
        for p in self.path.iterdir():
            if p.is_file():
                size += p.stat().st_size
        return {
            "path": str(self.path),
            "videos_ok": counts.get("ok", 0),
            "videos_failed": counts.get("failed", 0),
            "clips": cat.count("clip"),
            "fingerprint": cat.fingerprint,
            "arch": arch,
            "dim": cat.dim,
            "index_type": cat.index_type,
            "index_types": {lv: meta.get(f"{lv}.factory") for lv in LEVELS},
            "nprobe": {lv: int(meta.get(f"{lv}.nprobe", 0) or 0) for lv in LEVELS},
            "efsearch": {lv: int(meta.get(f"{lv}.efsearch", 0) or 0) for lv in LEVELS},
            "rerank": {lv: int(meta.get(f"{lv}.rerank", 0) or 0) for lv in LEVELS},
            "segments": {lv: len(v.segments) for lv, v in self.files.loaded.items()},
            "tombstones": {lv: int(v.tombstones.size) for lv, v in self.files.loaded.items()},
            "recall_at_10": {lv: float(meta.get(f"{lv}.recall", 1.0) or 1.0) for lv in LEVELS},
            "target_recall": cat.target_recall,
            "size_bytes": size,
            "generation": int(meta["generation"]),
            "format_version": int(meta["format_version"]),
        }

    def verify(self) -> list[str]:
        """Check the catalog and the FAISS files on disk; a list of problems, empty when clean.

        A reader checks the current state on disk (a fresh catalog snapshot), not the
        generation it loaded when it opened.
        """
        if not self.catalog.is_open:
            raise RuntimeError("the index is closed")
        if self.catalog.writable:
            if self.catalog.in_transaction:
                raise RuntimeError("commit() or rollback() the pending writes before verify()")
            return self._verify(self.catalog.db, check_loaded=True)
        db = sqlite3.connect(
            f"file:{self.path / CATALOG}?mode=ro", uri=True, timeout=30, isolation_level=None
        )
        try:
            db.execute("BEGIN")
            return self._verify(db, check_loaded=False)
        finally:
            db.close()

    def _verify(self, db: sqlite3.Connection, check_loaded: bool) -> list[str]:
        problems: list[str] = []
        try:
            res = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
            if res != ["ok"]:
                problems += [f"{self.path / CATALOG}: {r}" for r in res]
        except sqlite3.DatabaseError as exc:
            problems.append(f"{self.path / CATALOG}: {exc}")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        problems += verify_vectors(db, self.path, self.catalog.dim)
        for level in LEVELS:
            index, problem = self.files.read_checked(level, meta, db, eager=True)
            if index is None:
                problems.append(problem[1] if problem else f"{self.path / FILES[level]}: unreadable")
                continue
            sql = ("SELECT id FROM clips ORDER BY id" if level == "clip"
                   else "SELECT id FROM videos WHERE status='ok' ORDER BY id")
            cat = np.array([r[0] for r in db.execute(sql)], dtype=np.int64)
            have = index.ids()
            if len(have) != len(cat) or not np.array_equal(have, cat):
                extra = np.setdiff1d(have, cat)
                missing = np.setdiff1d(cat, have)
                problems.append(
                    f"{self.path / FILES[level]}: {len(extra)} ids not in the catalog "
                    f"(e.g. {extra[:5].tolist()}), {len(missing)} catalog rows missing (e.g. {missing[:5].tolist()})"
                )
            mem = self.files.loaded.get(level)
            if check_loaded and mem is not None and mem.ntotal != index.ntotal:
                problems.append(
                    f"{self.path / FILES[level]}: the loaded index holds {mem.ntotal} vectors, "
                    f"the file {index.ntotal}"
                )
        return problems

