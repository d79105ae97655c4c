"""Checksums of the vectors stored in the catalog, and the scan that checks them.

SQLite checks none of its pages, so a flipped byte in a stored vector would be read back as a
different vector: answered by ``clip_vectors``, built into a FAISS file by ``repair``. Every
clip row therefore carries the CRC-32 of its vector and window (``clips.checksum``) and every
ok video the CRC-32 of its pooled vector (``videos.vector_checksum``); see
:func:`~vcl_infer.index.catalog.clip_checksum`. A format-1 catalog has NULL checksums until its
first writable open fills them in (:mod:`.migrate`); NULL is "not checked", never "bad".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from vcl_infer.index.catalog import CATALOG, clip_checksum, video_checksum

_BATCH = 4096


def has_checksums(db: sqlite3.Connection) -> bool:
    """Whether the catalog has the checksum columns (format >= 2)."""
    return any(r[1] == "checksum" for r in db.execute("PRAGMA table_info(clips)"))


def _rows(db: sqlite3.Connection, level: str, where: str = "", args: tuple = ()):
    with_sums = has_checksums(db)
    if level == "clip":
        col = "checksum" if with_sums else "NULL"
        sql = f"SELECT id, vector, start_sec, end_sec, {col} FROM clips {where} ORDER BY id"
    else:
        col = "vector_checksum" if with_sums else "NULL"
        cond = f"WHERE status = 'ok' AND ({where[6:]})" if where else "WHERE status = 'ok'"
        sql = f"SELECT id, vector, NULL, NULL, {col} FROM videos {cond} ORDER BY id"
    cur = db.execute(sql, args)
    while True:
        batch = cur.fetchmany(_BATCH)
        if not batch:
            return
        yield from batch


def row_ok(level: str, vector: bytes, start, end, checksum, dim: int) -> bool:
    """Whether one stored row is intact (right length, and checksum when it has one)."""
    if not isinstance(vector, bytes) or len(vector) != 4 * dim:
        return False
    if checksum is None:
        return True
    actual = clip_checksum(vector, start, end) if level == "clip" else video_checksum(vector)
    return actual == int(checksum)


def scan(db: sqlite3.Connection, level: str, dim: int, where: str = "",
         args: tuple = ()) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Every stored vector of ``level`` (or those ``where`` selects, e.g. ``"WHERE id > ?"``): (ids
    ascending, ``N x dim`` float32, ids that fail their check).

    Rows that fail are left out of the ids and vectors.
    """
    ids, parts, bad = [], [], []
    for rid, vector, start, end, checksum in _rows(db, level, where, args):
        if row_ok(level, vector, start, end, checksum, dim):
            ids.append(rid)
            parts.append(vector)
        else:
            bad.append(int(rid))
    vecs = np.frombuffer(b"".join(parts), dtype="<f4").reshape(len(parts), dim).astype(np.float32, copy=False)
    return np.asarray(ids, dtype=np.int64), vecs, bad


def bad_rows(index_dir: Path, level: str, bad: list[int]) -> str:
    """The message for stored vectors that fail their checksum, naming the fix."""
    return (
        f"{Path(index_dir) / CATALOG}: {len(bad)} stored {level} vector(s) fail their checksum (ids "
        f"{bad[:5]}{' ...' if len(bad) > 5 else ''}): the catalog was damaged on disk; run "
        f"`vcl-index repair {index_dir}`, which restores them from the FAISS file where it holds them "
        "exactly and otherwise removes those videos so that the next build embeds them again"
    )


def check_rows(db: sqlite3.Connection, level: str, dim: int, where: str, args: tuple) -> list[int]:
    """Ids among the rows selected by ``where`` (e.g. ``"WHERE video_id = ?"``) that fail their check."""
    return [int(r[0]) for r in _rows(db, level, where, args) if not row_ok(level, r[1], r[2], r[3], r[4], dim)]


def verify_vectors(db: sqlite3.Connection, index_dir: Path, dim: int) -> list[str]:
    """Problems with the stored vectors (``verify``'s part): failed checksums, or none to check."""
    if not has_checksums(db):
        return [
            f"{Path(index_dir) / CATALOG}: catalog format 1 stores no vector checksums, so its vectors "
            f"cannot be checked; open it for writing once (`vcl-index repair {index_dir}`, or any build) to add them"
        ]
    problems = []
    for level in ("clip", "video"):
        _, _, bad = scan(db, level, dim)
        if bad:
            problems.append(bad_rows(index_dir, level, bad))
    return problems
