"""Upgrades of an older catalog to :data:`~vcl_infer.index.catalog.FORMAT_VERSION`, in place, in one
transaction (a crash leaves the old format, which is read as before and migrated next time)."""

from __future__ import annotations

from vcl_infer.index.catalog import SCHEMA, clip_checksum, video_checksum
from vcl_infer.index.connection import Catalog

_BATCH = 4096
# the segment layout's table and the index that keeps counting videos per commit cheap
SEGMENT_SCHEMA = [s for s in SCHEMA.split(";") if "tombstones" in s or "videos_status" in s]


def migrate(catalog: Catalog) -> bool:
    """Bring a catalog open for writing to the current format.

    Format 1 -> 2 adds the vector checksum columns and computes them from the stored vectors
    (damage done before this point cannot be told apart; from now on it is caught). Returns
    whether anything was changed.
    """
    for stmt in SEGMENT_SCHEMA:  # not a format change: see catalog.py
        catalog.db.execute(stmt)
    if catalog.format_version >= 2:
        return False
    from vcl_infer.index.checksums import has_checksums

    with catalog.tx() as db:
        if not has_checksums(db):  # a recovered format-1 catalog already has the columns, empty
            db.execute("ALTER TABLE clips ADD COLUMN checksum INTEGER")
            db.execute("ALTER TABLE videos ADD COLUMN vector_checksum INTEGER")
        _fill(db, "SELECT id, vector, start_sec, end_sec FROM clips WHERE checksum IS NULL",
              "UPDATE clips SET checksum = ? WHERE id = ?", lambda r: clip_checksum(r[1], r[2], r[3]))
        _fill(db, "SELECT id, vector FROM videos WHERE status = 'ok' AND vector_checksum IS NULL",
              "UPDATE videos SET vector_checksum = ? WHERE id = ?", lambda r: video_checksum(r[1]))
        db.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    catalog.format_version = 2
    catalog.reload_meta()
    return True


def _fill(db, select: str, update: str, checksum) -> None:
    rows = db.execute(select).fetchall()
    for s in range(0, len(rows), _BATCH):
        db.executemany(update, [(checksum(r), r[0]) for r in rows[s : s + _BATCH]])
