"""``vcl-index repair``: check the catalog first, fix what can be fixed exactly, never make it worse.

In order:

1. **The catalog itself** (``PRAGMA integrity_check`` and a no-op write). When SQLite reports
   damage, the rows it can still read are copied into a new catalog written beside the old
   one (:mod:`.recover`), which is swapped in only when it is provably complete (its counts
   equal those recorded at the last commit, its ids those of the checksummed FAISS files);
   otherwise nothing is touched and :class:`IndexCorrupt` says to rebuild.
2. **Stored vectors** that fail their checksum (:mod:`.checksums`): restored from the FAISS
   file when that file's checksum matches the catalog and it holds the vector exactly (Flat,
   IVF-Flat) with the same checksum; otherwise the video is removed from the catalog and listed,
   so the next build embeds it again. No damaged vector is ever built into a FAISS file.
3. **The FAISS files** are rebuilt from the catalog (and their search parameters re-tuned).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import numpy as np

from vcl_infer.index import faiss_ops as F
from vcl_infer.index.catalog import CATALOG, LEVELS, clip_checksum, path_from_db, video_checksum
from vcl_infer.index.checksums import scan
from vcl_infer.index.connection import Catalog
from vcl_infer.index.errors import IndexCorrupt
from vcl_infer.index.files import FaissFiles
from vcl_infer.index.migrate import migrate
from vcl_infer.index.segments import intact_copies


def catalog_problem(catalog: Catalog) -> str | None:
    """What SQLite says is wrong with the catalog (None when sound); connects it if needed."""
    try:
        if not catalog.is_open:
            catalog.connect()
        db = catalog.db
        result = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            return "; ".join(" ".join(r.split()) for r in result)[:600]
        db.execute("BEGIN IMMEDIATE")  # a header that forbids writing passes integrity_check
        try:
            db.execute("UPDATE meta SET value = value WHERE key = 'generation'")
        finally:
            db.execute("ROLLBACK")
        catalog.load_meta()
    except sqlite3.DatabaseError as exc:
        if "readonly" in str(exc) and not os.access(catalog.path / CATALOG, os.W_OK):
            raise IndexCorrupt(f"{catalog.path / CATALOG}: the catalog is not writable; fix its permissions") from exc
        return str(exc)
    return None


def repair_index(catalog: Catalog, files: FaissFiles) -> dict:
    """Repair the index held open for writing (the lock taken): its catalog and FAISS files; returns
    what was done.

    The report: ``catalog`` ("ok" or "recovered"), ``damaged_copy`` (where the damaged catalog
    was kept), ``restored`` (vectors restored from a FAISS file), ``removed`` (paths removed
    for re-embedding).
    """
    from vcl_infer.index.recover import recover_catalog

    report: dict = {"catalog": "ok", "restored": 0, "removed": []}
    problem = catalog_problem(catalog)
    if problem is not None:
        report["damaged_copy"] = recover_catalog(catalog, problem)
        report["catalog"] = "recovered"
    catalog.load_meta()
    migrate(catalog)
    fix_vectors(catalog, report)
    files.rebuild(LEVELS)
    return report


def _faiss_copies(catalog: Catalog, level: str) -> list[Any]:
    """The level's FAISS files whose bytes match the catalog, ready to reconstruct vectors by id."""
    meta = catalog.read_meta()
    copies = intact_copies(catalog.path, level, meta) or []
    if F.nlist_of(meta.get(f"{level}.factory", "")):
        faiss = F.faiss_module()
        for copy in copies:
            faiss.extract_index_ivf(copy).set_direct_map_type(faiss.DirectMap.Hashtable)
    return copies


def _restore(copies: list[Any], level: str, row, dim: int) -> bytes | None:
    rid, start, end, checksum = row
    if checksum is None:
        return None
    for copy in copies:
        try:
            vector = np.asarray(copy.reconstruct(int(rid)), dtype="<f4").reshape(dim).tobytes()
        except Exception:  # noqa: BLE001 - id not held, or a lossy code (PQ) that cannot reconstruct
            continue
        actual = clip_checksum(vector, start, end) if level == "clip" else video_checksum(vector)
        if actual == int(checksum):
            return vector
    return None


def fix_vectors(catalog: Catalog, report: dict) -> None:
    """Restore or remove every stored vector that fails its checksum (step 2 above)."""
    drop: set[int] = set()
    with catalog.tx() as db:
        for level in LEVELS:
            _, _, bad = scan(db, level, catalog.dim)
            if not bad:
                continue
            copies = _faiss_copies(catalog, level)
            for rid in bad:
                if level == "clip":
                    row = db.execute("SELECT id, start_sec, end_sec, checksum, video_id FROM clips WHERE id = ?",
                                     (rid,)).fetchone()
                else:
                    row = (*db.execute("SELECT id, NULL, NULL, vector_checksum FROM videos WHERE id = ?",
                                       (rid,)).fetchone(), rid)
                vector = _restore(copies, level, row[:4], catalog.dim)
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
