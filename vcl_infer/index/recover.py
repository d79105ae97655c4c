"""Recovering a damaged catalog: copy what SQLite can still read into a new catalog, swap it in
only when it is provably complete.

The new catalog is written beside the old one (``catalog.sqlite.recovering``), checked, and
renamed ``catalog.sqlite.recovered`` once complete; the swap then keeps the damaged catalog
and its log as ``catalog.sqlite.damaged-STAMP`` and renames the recovered one into place. A
crash mid-swap is finished by the next writable open (:func:`finish_interrupted_swap`); readers
refuse the index until then. "Complete" means: the counts recorded at the last commit (clips,
ok videos, all rows) equal the rows read, the generation is current (so those counts are of
this state), every clip belongs to a video, and the ids equal those of each FAISS file whose
checksum still matches.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from vcl_infer.index import faiss_ops as F
from vcl_infer.index import writer_lock
from vcl_infer.index.catalog import CATALOG, FILES, LEVELS, SCHEMA, fsync_dir
from vcl_infer.index.connection import Catalog
from vcl_infer.index.errors import IndexCorrupt, IndexLocked
from vcl_infer.index.faults import wal_lost_note, wal_was_lost
from vcl_infer.index.segments import intact_copies

RECOVERING = CATALOG + ".recovering"
RECOVERED = CATALOG + ".recovered"


def _rebuild_advice(index_dir: Path) -> str:
    return (
        f"build the index again in a new folder (`vcl-index build VIDEOS_DIR --index NEW_DIR`), or restore "
        f"{index_dir / CATALOG} from a backup"
    )


def _read_all(src: sqlite3.Connection) -> dict:
    out: dict = {"meta": dict(src.execute("SELECT key, value FROM meta").fetchall())}
    tables = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in ("videos", "clips", "tombstones"):
        if table not in tables:
            out[table] = (["level", "id"], [])
            continue
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        out[table] = (cols, src.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall())
    try:
        out["seq"] = src.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.DatabaseError:
        out["seq"] = []
    return out


def _faiss_ids(index_dir: Path, level: str, meta: dict, tombstones: list) -> set[int] | None:
    copies = intact_copies(index_dir, level, meta)
    if copies is None:
        return None
    held: set[int] = set()
    for copy in copies:
        held |= set(F.id_set(copy).tolist())
    return held - {i for lv, i in tombstones if lv == level}


def incomplete(index_dir: Path, data: dict) -> str | None:
    """Why the rows read may not be all of them (None: provably complete)."""
    meta = data["meta"]
    need = ("format_version", "fingerprint", "dim", "generation", "clip.count", "video.count",
            "clip.generation", "video.generation")
    if any(k not in meta for k in need):
        return "the index metadata is not all readable"
    if not meta["generation"] == meta["clip.generation"] == meta["video.generation"]:
        return "the last commit did not finish, so its row counts were never recorded"
    vcols, videos = data["videos"]
    ccols, clips = data["clips"]
    status, vid_col = vcols.index("status"), vcols.index("id")
    ok_ids = {r[vid_col] for r in videos if r[status] == "ok"}
    clip_ids = {r[ccols.index("id")] for r in clips}
    counts = {"clip": len(clips), "video": len(ok_ids)}
    for level in LEVELS:
        if counts[level] != int(meta[f"{level}.count"]):
            return f"{counts[level]} {level} rows read, {meta[f'{level}.count']} recorded"
    if "rows.videos" in meta and len(videos) != int(meta["rows.videos"]):
        return f"{len(videos)} video rows read, {meta['rows.videos']} recorded"
    if any(r[ccols.index("video_id")] not in ok_ids for r in clips):
        return "clips whose video is missing"
    for level, ids in (("clip", clip_ids), ("video", ok_ids)):
        held = _faiss_ids(index_dir, level, meta, data["tombstones"][1])
        if held is not None and held != ids:
            return f"the rows read differ from the ids held by {FILES[level]}"
    return None


def _write(target: Path, data: dict) -> None:
    if target.exists():
        target.unlink()
    db = sqlite3.connect(target, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("BEGIN")
        for stmt in SCHEMA.strip().split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", list(data["meta"].items()))
        for table in ("videos", "clips", "tombstones"):
            cols, rows = data[table]
            marks = ", ".join("?" * len(cols))
            db.executemany(f"INSERT INTO {table}({', '.join(cols)}) VALUES ({marks})", rows)
        for name, seq in data["seq"]:
            db.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (seq, name))
        db.execute("COMMIT")
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise IndexCorrupt(f"{target}: the recovered catalog failed its own check; nothing was swapped in")
    finally:
        db.close()
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


def recover_catalog(catalog: Catalog, problem: str) -> str:
    """Replace this damaged catalog by a complete recovered copy; returns where the damaged one
    was kept. Raises :class:`IndexCorrupt` (nothing changed) when that cannot be done safely."""
    index_dir = catalog.path
    catalog_file = index_dir / CATALOG
    catalog.close()
    try:
        src = sqlite3.connect(f"file:{catalog_file}?mode=ro", uri=True)
        try:
            data = _read_all(src)
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        if catalog.wal_lost:
            raise IndexCorrupt(
                f"{wal_lost_note(index_dir)}; the catalog that remains fails with: {exc}; nothing was changed. "
                f"Otherwise {_rebuild_advice(index_dir)}"
            ) from exc
        raise IndexCorrupt(
            f"{catalog_file}: the catalog is damaged ({problem}) and SQLite cannot read its rows ({exc}), so "
            f"nothing can be recovered; nothing was changed. To go on, {_rebuild_advice(index_dir)}"
        ) from exc
    why = incomplete(index_dir, data)
    if why is not None:
        raise IndexCorrupt(
            f"{catalog_file}: the catalog is damaged ({problem}); the rows SQLite can still read are not provably "
            f"all of them ({why}), so it was left as it is. To go on, {_rebuild_advice(index_dir)}"
        )
    _write(index_dir / RECOVERING, data)
    os.replace(index_dir / RECOVERING, index_dir / RECOVERED)
    fsync_dir(index_dir)
    damaged = finish_interrupted_swap(index_dir)
    catalog.connect()
    return damaged or ""


def finish_interrupted_swap(index_dir: Path) -> str | None:
    """Swap a complete ``catalog.sqlite.recovered`` into place (idempotent); None when there is none."""
    index_dir = Path(index_dir)
    recovered = index_dir / RECOVERED
    if not recovered.exists():
        return None
    catalog = index_dir / CATALOG
    damaged = index_dir / f"{CATALOG}.damaged-{recovered.stat().st_mtime_ns}"  # stable across retries
    for suffix in ("-wal", "-shm"):  # the old log must never be applied to the new file
        log = Path(f"{catalog}{suffix}")
        if log.exists():
            os.replace(log, f"{damaged}{suffix}")
    if catalog.exists() and not damaged.exists():
        os.link(catalog, damaged)
    os.replace(recovered, catalog)
    fsync_dir(index_dir)
    return str(damaged)


def clear_interrupted_create(path: Path) -> bool:
    """Remove what a create killed before its first commit left (a catalog without metadata and no
    FAISS file), so that the create can start again; False (nothing touched) for anything else."""
    if any(path.glob("*.faiss")) or wal_was_lost(path):
        return False
    try:
        fd = writer_lock.acquire(path)
    except IndexLocked:
        return False  # open() says who holds it
    try:
        db = sqlite3.connect(path / CATALOG)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                return False
            row = None
        finally:
            db.close()
        if row is not None:
            return False
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path / CATALOG}{suffix}").unlink(missing_ok=True)
        return True
    except sqlite3.Error:
        return False  # damaged: open() explains it
    finally:
        writer_lock.release(fd)

