"""The one-writer lock of an index folder: ``.lock`` flock'ed by the writer, holding its pid."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from vcl_infer.index.catalog import LOCK, pid_alive
from vcl_infer.index.errors import IndexLocked


def lock_pid(index_dir: Path) -> int:
    """The pid the lock file names (0 when none or unreadable)."""
    try:
        return int((Path(index_dir) / LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def writer_active(index_dir: Path) -> bool:
    """Whether another live process holds (or last held) the writer lock."""
    pid = lock_pid(index_dir)
    return pid != os.getpid() and pid_alive(pid)


def acquire(index_dir: Path) -> int:
    """Take the writer lock (``IndexLocked`` naming the holder when taken); returns its descriptor."""
    fd = os.open(Path(index_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        pid = lock_pid(index_dir)
        who = f"process {pid}" if pid else "another process"
        raise IndexLocked(
            f"{index_dir}: the index is being written by {who}; only one writer at a time "
            "(wait for it to finish; searching works meanwhile)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def release(fd: int) -> None:
    """Clear the pid and drop the lock."""
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)
