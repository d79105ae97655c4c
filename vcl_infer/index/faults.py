"""What went wrong with the catalog, said so that the user knows what to do.

SQLite reports a damaged file, a full disk or a lost write-ahead log as bare
``sqlite3.DatabaseError`` / ``OperationalError`` from whichever statement met it first. Every
public entry point of :class:`~vcl_infer.index.store.VideoIndex` passes such errors through
:func:`translate`, which returns the index's own error (a :class:`~vcl_infer.errors.VclError`)
naming the cause and the fix, so no command ever shows a traceback for them.
"""

from __future__ import annotations

import errno
import functools
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

from vcl_infer.errors import VclError
from vcl_infer.index.catalog import CATALOG
from vcl_infer.index.errors import IndexCorrupt, IndexDiskFull, IndexLocked

# SQLite primary result codes (https://www.sqlite.org/rescode.html)
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

Fn = TypeVar("Fn", bound=Callable[..., Any])


WAL_LOST_MARK = CATALOG + "-wal-lost"


def wal_was_lost(index_dir: Path) -> bool:
    """True when ``catalog.sqlite-shm`` is there without ``catalog.sqlite-wal`` (or that was seen before).

    SQLite deletes both on a clean close and leaves both after a crash; a shared-memory file
    alone means the log, which holds every commit not yet copied into the main file, was
    deleted (or the folder was copied without it). Check this before connecting: any
    connection starts a new log and the evidence is gone, so it is kept in a small marker file
    (``catalog.sqlite-wal-lost``) until a repair or a clean writable open clears it.
    """
    base = Path(index_dir) / CATALOG
    mark = Path(index_dir) / WAL_LOST_MARK
    if Path(f"{base}-shm").exists() and not Path(f"{base}-wal").exists():
        try:
            mark.write_text("catalog.sqlite-shm was found without catalog.sqlite-wal\n")
        except OSError:  # a read-only folder: the evidence lasts as long as nobody writes
            pass
        return True
    return mark.exists()


def clear_wal_lost(index_dir: Path) -> None:
    """Forget a lost log once the index is consistent again (repair, or FAISS files that match)."""
    try:
        (Path(index_dir) / WAL_LOST_MARK).unlink()
    except FileNotFoundError:
        pass


def wal_lost_note(index_dir: Path) -> str:
    return (
        f"{Path(index_dir) / CATALOG}-wal is missing while {CATALOG}-shm is there: the catalog's "
        "write-ahead log, which held its latest commits, was deleted after a crash (or the folder was "
        "copied without it), so those commits are gone from the catalog. If you still have the -wal "
        "file, put it back beside the catalog before anything opens the index"
    )


def damaged_catalog_fix(index_dir: Path) -> str:
    return (
        f"run `vcl-index repair {index_dir}`: it checks the catalog and, only if every row can still be "
        "read, swaps in a recovered copy (keeping the damaged file beside it); otherwise build the "
        f"index again in a new folder (`vcl-index build VIDEOS_DIR --index NEW_DIR`) or restore "
        f"{Path(index_dir) / CATALOG} from a backup"
    )


def disk_full(index_dir: Path, detail: str, *, catalog_committed: bool = False) -> IndexDiskFull:
    try:
        free = f"{shutil.disk_usage(index_dir).free / 2**20:.0f} MiB free there now"
    except OSError:
        free = "free space unknown"
    if catalog_committed:
        state = (
            "the catalog holds the last batch but a FAISS file could not be written (searches refuse "
            f"the stale file); free space, then run `vcl-index repair {index_dir}` or re-run the build, "
            "which rebuilds it from the catalog"
        )
    else:
        state = (
            "nothing of the batch in progress was written and the index is as of its last commit; "
            "free space, then re-run the same command (a build resumes where it stopped)"
        )
    return IndexDiskFull(f"{index_dir}: the disk is full ({detail}; {free}): {state}")


def translate(exc: BaseException, index_dir: Path, *, wal_lost: bool = False) -> VclError | None:
    """The index error for a SQLite or OS error met while using ``index_dir``; None to re-raise as is."""
    if isinstance(exc, VclError):
        return None
    catalog = Path(index_dir) / CATALOG
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return disk_full(index_dir, exc.strerror or str(exc))
    if not isinstance(exc, sqlite3.Error):
        return None
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == _FULL or "disk is full" in text:
        return disk_full(index_dir, f"SQLite: {text}")
    if code in (_BUSY, _LOCKED) or "database is locked" in text:
        return IndexLocked(f"{catalog}: the catalog stayed busy ({text}); wait for the other writer and retry")
    if code == _READONLY and "readonly" in text and not wal_lost:
        return IndexCorrupt(
            f"{catalog}: the catalog cannot be written ({text}): check that the folder and its files are "
            f"writable and the disk is not mounted read-only; if they are, the catalog's header is damaged: "
            f"{damaged_catalog_fix(index_dir)}"
        )
    if wal_lost:
        return IndexCorrupt(
            f"{wal_lost_note(index_dir)}; the catalog now fails with: {text}. Otherwise build the index "
            f"again: delete {index_dir} and run `vcl-index build VIDEOS_DIR --index {index_dir}`"
        )
    if "no such table" in text or "no such column" in text:
        return IndexCorrupt(
            f"{catalog}: the catalog lacks the index's tables ({text}): it is not a vcl index, or its "
            f"write-ahead log ({CATALOG}-wal) was lost; build the index again in a new folder "
            "(`vcl-index build VIDEOS_DIR --index NEW_DIR`)"
        )
    if code == _IOERR:
        return IndexCorrupt(f"{catalog}: the disk failed while reading the catalog ({text}); check the disk, then "
                            f"{damaged_catalog_fix(index_dir)}")
    if code == _CANTOPEN:
        return IndexCorrupt(f"{catalog}: the catalog cannot be opened ({text}); check the folder's permissions")
    return IndexCorrupt(f"{catalog}: the catalog is damaged ({text}); {damaged_catalog_fix(index_dir)}")


def guarded(method: Fn) -> Fn:
    """Run an index method so that SQLite and disk errors leave as index errors naming the fix.

    A failed write discards the whole uncommitted batch (SQLite may already have rolled part
    of it back), so the in-memory FAISS indexes and the catalog stay at the last commit.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            err = translate(exc, self.path, wal_lost=getattr(self, "wal_lost", False))
            if err is None:
                raise
            self._abandon_batch()
            raise err from exc

    return wrapper  # type: ignore[return-value]
