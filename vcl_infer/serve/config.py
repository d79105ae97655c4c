"""The search service's settings: what it serves, who may ask, and the limits on a request."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vcl_infer.errors import VclError


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one server.

    Attributes:
        index_dir: the index served (opened read-only).
        model: encoder bundle; None: the one the index was built with (as ``vcl-search``).
        roots: folders whose files may be queried by path (resolved, links followed); none:
            path queries are refused, only uploads are searched.
        token: bearer token required on every route but ``/healthz`` and the docs; None: open.
        workers: queries decoded and embedded at the same time (each with its own decode
            worker process); ``max_queue`` more may wait, beyond that a request gets 503.
        max_upload_bytes: largest accepted request body.
        decode_timeout_s: hard decode time limit per query (the worker is killed after it).
        max_range_s: longest ``end - start`` a query may ask for.
        max_k: largest ``k``.
        reload_interval_s: how often the index folder is checked for a new generation.
    """

    index_dir: Path
    model: str | None = None
    roots: tuple[Path, ...] = field(default_factory=tuple)
    token: str | None = None
    workers: int = 2
    max_queue: int = 32
    max_upload_bytes: int = 200 * 2**20
    decode_timeout_s: float = 30.0
    max_range_s: float = 600.0
    max_k: int = 100
    reload_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_queue < 0 or self.max_upload_bytes < 1 or self.max_k < 1:
            raise VclError("workers, max_k and the upload limit must be at least 1, max_queue at least 0")
        if self.decode_timeout_s <= 0 or self.max_range_s <= 0:
            raise VclError("the decode timeout and the maximum range must be positive")
        object.__setattr__(self, "index_dir", Path(self.index_dir))
        object.__setattr__(self, "roots", tuple(Path(os.path.realpath(r)) for r in self.roots))

    def allowed_path(self, path: str) -> Path:
        """``path`` resolved, if it lies under a root.

        Raises:
            PermissionError: path queries are off, or the path resolves outside every root.
        """
        if not self.roots:
            raise PermissionError("path queries are off on this server (start vcl-serve with --root DIR); upload the video instead")
        real = Path(os.path.realpath(path))
        for root in self.roots:
            if real == root or root in real.parents:
                return real
        raise PermissionError(f"{path} is outside the folders this server may read (--root); "
                              "upload the video instead")


def read_token_file(path: str | os.PathLike) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped); it must not be empty."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise VclError(f"cannot read the token file {path} ({exc.strerror})") from exc
    if len(token) < 16:
        raise VclError(f"the token in {path} is empty or shorter than 16 characters; write a long random one, "
                       "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))' > TOKEN_FILE`")
    return token
