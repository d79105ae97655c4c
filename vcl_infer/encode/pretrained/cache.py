"""Where published encoders live on this machine, and a lock so two processes never write one twice.

Layout under :func:`cache_root` (``$VCL_CACHE``, else ``$XDG_CACHE_HOME/vcl``, else
``~/.cache/vcl``)::

    checkpoints/<sha256>/<file name>        verified downloads, named by their content hash
    checkpoints/<sha256>/<file name>.part   an interrupted download, resumed on the next run
    checkpoints/prefix-<prefix>/<file name> a download whose publisher gives only a hash prefix,
        + <file name>.sha256.json            with its full sha256 pinned on first use (pins.py)
    bundles/<name>-<sha256[:12]>/model.onnx the converted bundle (+ model.json, source.json)

Everything is written to a temporary name and renamed into place, so a path that exists is
complete.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CACHE_ENV = "VCL_CACHE"


def cache_root() -> Path:
    """The user's vcl cache folder (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vcl"


def checkpoint_path(sha256: str, filename: str) -> Path:
    """Where the verified checkpoint with this hash is kept."""
    return cache_root() / "checkpoints" / sha256 / filename


def prefix_checkpoint_path(prefix: str, filename: str) -> Path:
    """Where the checkpoint known by the publisher's hash ``prefix`` (and its full-hash pin) is kept."""
    return cache_root() / "checkpoints" / f"prefix-{prefix}" / filename


def bundle_dir(name: str, sha256: str) -> Path:
    """The folder of the bundle converted from checkpoint ``sha256`` for registry entry ``name``.

    The hash is part of the name, so re-pinning an entry to other weights converts afresh.
    """
    return cache_root() / "bundles" / f"{name}-{sha256[:12]}"


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (another process waits for it).

    Without ``fcntl`` (Windows) this is a no-op: the temp-and-rename writes still keep every
    visible file whole, two processes may just do the same work twice.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
