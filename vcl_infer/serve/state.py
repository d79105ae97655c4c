"""The served index: read-only, swapped for a newer generation when a build commits one.

A reader :class:`~vcl_infer.index.VideoIndex` holds one catalog snapshot that matches the
FAISS files it loaded, so a request always sees one consistent generation. Every
``reload_interval_s`` the catalog's generation on disk is read; when it moved, a new reader
is opened (the old one keeps answering meanwhile, and is closed when its last request
ends). A writer caught between its steps, or a new generation that fails its checks, is
not taken: the old one goes on serving and the problem shows in ``/healthz``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from vcl_infer.serve.config import ServeConfig


class _Handle:
    """One open reader, counted while requests use it."""

    def __init__(self, index, generation: int, num_clips):
        self.index = index
        self.generation = generation
        self.num_clips = num_clips  # a ClipSampling: how queries are cut (vcl_infer.search.query.query_sampling)
        self.lock = threading.Lock()  # the catalog connection is used by one thread at a time
        self.users = 0
        self.retired = False


class IndexState:
    """The current reader and the encoder of the served index.

    Raises (from the constructor):
        VclError: no index, a damaged one, or no matching encoder.
    """

    def __init__(self, config: ServeConfig):
        from vcl_infer.search.query import embedder_for_index

        self.config = config
        self._guard = threading.Lock()
        self._handle = self._open()
        self.embedder = embedder_for_index(self._handle.index, config.model, config.index_dir)
        self.fingerprint = self._handle.index.fingerprint
        self._checked = time.monotonic()
        self.problem: str | None = None

    def _open(self) -> _Handle:
        from vcl_infer.index import VideoIndex
        from vcl_infer.search.query import query_sampling

        index = VideoIndex.open(self.config.index_dir)
        rule = query_sampling(self.config.index_dir)  # queries are cut as `vcl-search` cuts them
        return _Handle(index, int(index.info()["generation"]), rule)

    def _generation_on_disk(self) -> int | None:
        path = self.config.index_dir / "catalog.sqlite"
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return int(row[0]) if row else None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.config.reload_interval_s:
            return
        self._checked = now
        on_disk = self._generation_on_disk()
        if on_disk is None or on_disk == self._handle.generation:
            return
        try:
            fresh = self._open()
        except Exception as exc:  # noqa: BLE001 - keep serving the generation we have
            self.problem = f"generation {on_disk} on disk could not be opened ({exc}); serving {self._handle.generation}"
            return
        if fresh.index.fingerprint != self.fingerprint:
            fresh.index.close()
            self.problem = "the index on disk was rebuilt with another encoder; restart vcl-serve to serve it"
            return
        old, self._handle, self.problem = self._handle, fresh, None
        old.retired = True
        if old.users == 0:
            old.index.close()

    @contextmanager
    def use(self) -> Iterator[_Handle]:
        """The current reader, held for one request (newer generations picked up first)."""
        with self._guard:
            self._maybe_reload()
            handle = self._handle
            handle.users += 1
        try:
            yield handle
        finally:
            with self._guard:
                handle.users -= 1
                if handle.retired and handle.users == 0:
                    handle.index.close()

    @property
    def generation(self) -> int:
        with self._guard:
            self._maybe_reload()
            return self._handle.generation

    def close(self) -> None:
        with self._guard:
            self._handle.retired = True
            if self._handle.users == 0:
                self._handle.index.close()
