"""Queries off the event loop: decode, embed and search in a bounded pool of threads.

Each of the ``workers`` threads has its own persistent decode worker process
(:class:`~vcl_infer.video.isolated.DecodePool`: spawned once, killed and replaced when a
file overruns ``decode_timeout_s`` or crashes it), so a query pays no process start-up; a
range query (``start``/``end``) is decoded by :func:`vcl_infer.search.query.decode_range` in a
one-off child, as ``vcl-search FILE@START-END`` does. Embedding and ranking are the
CLI's own (:func:`vcl_infer.index.build.clip_vectors`, :func:`vcl_infer.search.query.search_vectors`),
so the service answers what ``vcl-search`` answers. Beyond ``workers + max_queue`` requests
in flight, :class:`Busy` is raised at once instead of queueing without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from vcl_infer.errors import VideoError
from vcl_infer.serve.config import ServeConfig
from vcl_infer.serve.state import IndexState


class Busy(Exception):
    """More requests in flight than the pool and its queue hold."""


class QueryEngine:
    """The bounded pool and the work a request does in it."""

    def __init__(self, config: ServeConfig, state: IndexState):
        from vcl_infer.video.isolated import DecodePool

        self.config = config
        self.state = state
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="vcl-serve")
        self._pools: queue.Queue = queue.Queue()
        for _ in range(config.workers):
            self._pools.put(DecodePool(workers=1, timeout_s=config.decode_timeout_s))
        self._in_flight = 0
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` in the pool, or raise :class:`Busy` when it is full."""
        with self._count_lock:
            if self._in_flight >= self.config.workers + self.config.max_queue:
                raise Busy(f"the server is busy ({self._in_flight} requests in flight); retry shortly")
            self._in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future | None) -> None:
        with self._count_lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _query_clips(self, path: str, start: float | None, end: float | None, num_clips):
        from vcl_infer.search.query import decode_range
        from vcl_infer.video.isolated import run_isolated

        spec = self.state.embedder.spec.clip
        if start is None or end is None:
            pool = self._pools.get()
            try:
                (result,) = list(pool.imap([(path, spec, num_clips)]))
            finally:
                self._pools.put(pool)
            if isinstance(result, VideoError):
                raise result
            return result.clips, [(float(w.start_sec), float(w.end_sec)) for w in result.windows]
        clips, windows, _ = run_isolated(decode_range, (path, spec, num_clips, start, end), path,
                                         self.config.decode_timeout_s)
        return clips, [(float(a), float(b)) for a, b in windows]

    def search(self, path: str, start: float | None, end: float | None, k: int, level: str) -> dict[str, Any]:
        """Decode, embed and rank one query file; the ``POST /search`` body."""
        from vcl_infer.index.build import clip_vectors
        from vcl_infer.search.query import search_vectors

        t0 = time.monotonic()
        with self.state.use() as handle:
            num_clips = handle.num_clips
        clips, windows = self._query_clips(path, start, end, num_clips)
        video_vec, clip_vecs = clip_vectors(self.state.embedder, clips)
        with self.state.use() as handle, handle.lock:
            hits = search_vectors(handle.index, video_vec, clip_vecs, k=k, moments=level == "clip",
                                  query_windows=windows)
            ids = [handle.index.video_id(h.video) for h in hits]
            generation = handle.generation
        results = []
        for hit, vid in zip(hits, ids):
            row = hit.to_dict()
            row["video_id"] = vid
            middle = (hit.start + hit.end) / 2
            row["thumbnail"] = f"/videos/{vid}/thumbnail?t={middle:.3f}"
            results.append(row)
        return {"level": level, "k": k, "generation": generation, "query_windows": windows,
                "results": results, "seconds": round(time.monotonic() - t0, 4)}

    def video(self, video_id: int) -> dict[str, Any]:
        """A catalog record with its clips (``GET /videos/{id}``); KeyError when unknown."""
        with self.state.use() as handle, handle.lock:
            rec = handle.index.video(video_id)
            clips = handle.index.clips_of(video_id) if rec.status == "ok" else []
        data = {k: getattr(rec, k) for k in ("id", "path", "status", "size", "duration", "fps", "frames", "width",
                                               "height", "backend", "error_kind", "error", "num_clips")}
        data["clips"] = [{"id": c.id, "start": c.start_sec, "end": c.end_sec} for c in clips]
        return data

    def thumbnail(self, video_id: int, seconds: float | None) -> bytes:
        """PNG of the frame at ``seconds`` (default: the middle) of an indexed video."""
        from vcl_infer.search.png import encode_png
        from vcl_infer.serve.thumbnail import frame_at
        from vcl_infer.video.isolated import run_isolated

        with self.state.use() as handle, handle.lock:
            rec = handle.index.video(video_id)
        if rec.status != "ok":
            raise KeyError(f"video {video_id} was not indexed ({rec.error_kind}: {rec.error}); it has no frames to show")
        duration = float(rec.duration or 0.0)
        t = duration / 2 if seconds is None else min(max(0.0, seconds), duration)
        frame = run_isolated(frame_at, (rec.path, t), rec.path, self.config.decode_timeout_s)
        return encode_png(frame)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        while not self._pools.empty():
            self._pools.get_nowait().close()
