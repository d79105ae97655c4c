"""``vcl-index repair``: check the catalog first, fix what can be fixed exactly, never make it worse.

In order:

1. **The catalog itself** (``PRAGMA integrity_check`` and a no-op write). When SQLite reports
   damage, the rows it can still read are copied into a new catalog written beside the old
   one (:mod:`.recover`), which is swapped in only when it is provably complete (its counts
   equal those recorded at the last commit, its ids those of the checksummed FAISS files);
   otherwise nothing is touched and :class:`IndexCorrupt` says to rebuild.
2. **Stored vectors** that fail their checksum (:mod:`.checksums`): restored from the FAISS
   file when that file's sha256 matches the catalog and it holds the vector exactly (Flat,
   IVF-Flat) with the same checksum; otherwise the video is removed from the catalog and listed,
   so the next build embeds it again. No damaged vector is ever built into a FAISS file.
3. **The FAISS files** are rebuilt from the catalog (and their search parameters re-tuned).
"""

from __future__ import annotations

import os
import sqlite3

import numpy as np

from vcl_infer.index import _faiss as F
from vcl_infer.index.catalog import CATALOG, FILES, LEVELS, clip_checksum, path_from_db, video_checksum
from vcl_infer.index.checksums import scan
from vcl_infer.index.errors import IndexCorrupt
from vcl_infer.index.migrate import migrate


def catalog_problem(index) -> str | None:
    """What SQLite says is wrong with the catalog (None when sound); connects ``index`` if needed."""
    try:
        if index._db is None:
            index._connect()
        result = [r[0] for r in index._db.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            return "; ".join(" ".join(r.split()) for r in result)[:600]
        index._db.execute("BEGIN IMMEDIATE")  # a header that forbids writing passes integrity_check
        try:
            index._db.execute("UPDATE meta SET value = value WHERE key = 'generation'")
        finally:
            index._db.execute("ROLLBACK")
        index._load_meta()
    except sqlite3.DatabaseError as exc:
        if "readonly" in str(exc) and not os.access(index.path / CATALOG, os.W_OK):
            raise IndexCorrupt(f"{index.path / CATALOG}: the catalog is not writable; fix its permissions") from exc
        return str(exc)
    return None


def repair_index(index) -> dict:
    """Repair the index held open for writing (the lock taken); returns what was done.

    The report: ``catalog`` ("ok" or "recovered"), ``damaged_copy`` (where the damaged catalog
    was kept), ``restored`` (vectors restored from a FAISS file), ``removed`` (paths removed
    for re-embedding).
    """
    from vcl_infer.index.recover import recover_catalog

    report: dict = {"catalog": "ok", "restored": 0, "removed": []}
    problem = catalog_problem(index)
    if problem is not None:
        report["damaged_copy"] = recover_catalog(index, problem)
        report["catalog"] = "recovered"
    index._load_meta()
    migrate(index)
    fix_vectors(index, report)
    index._rebuild(LEVELS)
    return report


def _faiss_copy(index, level: str):
    """The level's FAISS file when its bytes match the catalog's sha256 (stale is fine: ids are never
    reused, so every vector it holds is that id's), ready to reconstruct vectors by id; else None."""
    path = index.path / FILES[level]
    meta = index._meta()
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if F.sha256(data) != meta.get(f"{level}.sha256"):
        return None
    try:
        faiss_index = F.deserialize(data)
        if F.nlist_of(meta.get(f"{level}.factory", "")):
            faiss = F._faiss()
            faiss.extract_index_ivf(faiss_index).set_direct_map_type(faiss.DirectMap.Hashtable)
    except Exception:  # noqa: BLE001 - an unreadable copy is simply not used
        return None
    return faiss_index


def _restore(copy, level: str, row, dim: int) -> bytes | None:
    rid, start, end, checksum = row
    if copy is None or checksum is None:
        return None
    try:
        vector = np.asarray(copy.reconstruct(int(rid)), dtype="<f4").reshape(dim).tobytes()
    except Exception:  # noqa: BLE001 - id not held, or a lossy code (PQ) that cannot reconstruct
        return None
    actual = clip_checksum(vector, start, end) if level == "clip" else video_checksum(vector)
    return vector if actual == int(checksum) else None


def fix_vectors(index, report: dict) -> None:
    """Restore or remove every stored vector that fails its checksum (step 2 above)."""
    db = index._db
    drop: set[int] = set()
    with index._tx():
        for level in LEVELS:
            _, _, bad = scan(db, level, index.dim)
            if not bad:
                continue
            copy = _faiss_copy(index, level)
            for rid in bad:
                if level == "clip":
                    row = db.execute("SELECT id, start_sec, end_sec, checksum, video_id FROM clips WHERE id = ?",
                                     (rid,)).fetchone()
                else:
                    row = (*db.execute("SELECT id, NULL, NULL, vector_checksum FROM videos WHERE id = ?",
                                       (rid,)).fetchone(), rid)
                vector = _restore(copy, level, row[:4], index.dim)
                if vector is None:
                    drop.add(int(row[4]))
                    continue
                table = "clips" if level == "clip" else "videos"
                db.execute(f"UPDATE {table} SET vector = ? WHERE id = ?", (vector, rid))
                report["restored"] += 1
        for vid in sorted(drop):
            (path,) = db.execute("SELECT path FROM videos WHERE id = ?", (vid,)).fetchone()
            report["removed"].append(path_from_db(path))
            db.execute("DELETE FROM videos WHERE id = ?", (vid,))
