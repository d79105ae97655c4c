"""Read side of the index: search, record lookups, info and verification."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np

from vcl_infer.errors import SpecMismatch
from vcl_infer.index import _faiss as F
from vcl_infer.index.catalog import (
    _VIDEO_COLS,
    CATALOG,
    FILES,
    LEVELS,
    ClipRecord,
    VideoRecord,
    _normalise,
    path_from_db,
    path_to_db,
)
from vcl_infer.index.checksums import bad_rows, check_rows, verify_vectors
from vcl_infer.index.errors import IndexCorrupt
from vcl_infer.index.faults import guarded


class Queries:
    """Mixin of :class:`~vcl_infer.index.store.VideoIndex`: the read-only API."""

    @guarded
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
            F.set_search_params(index, factory, nprobe, None)
        try:
            target = index
            if level not in self._gpu:
                self._gpu[level] = F.to_gpu(index)
            if self._gpu[level] is not None and nprobe is None:
                target = self._gpu[level]
            scores, ids = target.search(q, k)
        finally:
            if nprobe is not None:
                F.set_search_params(index, factory, int(self._meta_cache.get(f"{level}.nprobe", 0) or 0), None)
        scores = scores.astype(np.float32, copy=False)
        ids = ids.astype(np.int64, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _num_clips(self, vid: int) -> int:
        return self._db.execute("SELECT COUNT(*) FROM clips WHERE video_id = ?", (vid,)).fetchone()[0]

    def _video_rec(self, row) -> VideoRecord:
        return VideoRecord(row[0], path_from_db(row[1]), *row[2:], num_clips=self._num_clips(row[0]))

    @guarded
    def video(self, id: int) -> VideoRecord:
        row = self._db.execute(f"SELECT {_VIDEO_COLS} FROM videos WHERE id = ?", (int(id),)).fetchone()
        if row is None:
            raise KeyError(f"no video with id {id} in {self.path}")
        return self._video_rec(row)

    def video_id(self, path: str) -> int | None:
        """Catalog id of the video stored under ``path`` (as indexed), or None."""
        row = self._db.execute("SELECT id FROM videos WHERE path = ?", (path_to_db(os.fspath(path)),)).fetchone()
        return None if row is None else int(row[0])

    @guarded
    def clip(self, id: int) -> ClipRecord:
        row = self._db.execute(
            "SELECT c.id, c.video_id, v.path, c.start_sec, c.end_sec FROM clips c JOIN videos v "
            "ON v.id = c.video_id WHERE c.id = ?",
            (int(id),),
        ).fetchone()
        if row is None:
            raise KeyError(f"no clip with id {id} in {self.path}")
        return ClipRecord(row[0], row[1], path_from_db(row[2]), row[3], row[4])

    @guarded
    def clips_of(self, video_id: int) -> list[ClipRecord]:
        rows = self._db.execute(
            "SELECT c.id, c.video_id, v.path, c.start_sec, c.end_sec FROM clips c JOIN videos v "
            "ON v.id = c.video_id WHERE c.video_id = ? ORDER BY c.start_sec, c.id",
            (int(video_id),),
        ).fetchall()
        return [ClipRecord(r[0], r[1], path_from_db(r[2]), r[3], r[4]) for r in rows]

    @guarded
    def clip_vectors(self, video_id: int) -> np.ndarray:
        """The stored clip vectors of a video (``N x dim``, in time order), checked against their checksums."""
        bad = check_rows(self._db, "clip", self.dim, "WHERE video_id = ?", (int(video_id),))
        if bad:
            raise IndexCorrupt(bad_rows(self.path, "clip", bad))
        rows = self._db.execute(
            "SELECT vector FROM clips WHERE video_id = ? ORDER BY start_sec, id", (int(video_id),)
        ).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), self.dim).copy()

    @guarded
    def known_files(self) -> dict[str, tuple[int, int, str]]:
        """{path: (size, mtime_ns, status)} of every file in the catalog, ok or failed."""
        return {
            path_from_db(p): (s, m, st)
            for p, s, m, st in self._db.execute("SELECT path, size, mtime_ns, status FROM videos")
        }

    @guarded
    def failures(self) -> list[VideoRecord]:
        rows = self._db.execute(f"SELECT {_VIDEO_COLS} FROM videos WHERE status = 'failed' ORDER BY path")
        return [VideoRecord(r[0], path_from_db(r[1]), *r[2:], num_clips=0) for r in rows.fetchall()]

    @guarded
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
            "efsearch": {lv: int(meta.get(f"{lv}.efsearch", 0) or 0) for lv in LEVELS},
            "recall_at_10": {lv: float(meta.get(f"{lv}.recall", 1.0) or 1.0) for lv in LEVELS},
            "target_recall": self.target_recall,
            "size_bytes": size,
            "generation": int(meta["generation"]),
            "format_version": int(meta["format_version"]),
        }

    @guarded
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
        problems += verify_vectors(db, self.path, self.dim)
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

