"""Decode untrusted files in child processes with a hard per-file wall-clock timeout.

decord and FFmpeg can hang forever holding the GIL or abort the process on bad input
(decord issues 373, 269, 229, 318, 113); signals and thread timeouts cannot stop native
code, so each file is decoded in a worker process (a fresh interpreter, see
:mod:`vcl_infer.video._child`: it never re-runs the caller's script, so a plain script without
``if __name__ == "__main__":`` works) that is SIGKILLed and replaced when it overruns its time
or dies. The caller only ever sees a :class:`DecodedVideo` or a
:class:`VideoError` (``DecodeTimeout`` / ``DecoderCrashed`` naming the file).

The same workers run other reads of untrusted files (a query's time range, the HTML
report's thumbnails) through :func:`run_isolated`: one isolation mechanism for every decode.
"""

from __future__ import annotations

import os
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator, Union

from vcl_infer.clips.sampling import ClipSampling
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import DecoderCrashed, DecodeTimeout, VideoError
from vcl_infer.video._child import ChildProcess, log_decoder_output
from vcl_infer.video._worker import CallRequest, DecodeRequest
from vcl_infer.video.clips import ClipBatch, DecodedVideo, collect
from vcl_infer.video.open import DEFAULT_MAX_PIXELS

Request = Union[DecodeRequest, CallRequest, tuple]  # tuple: (path, ClipSpec, num_clips or ClipSampling)
Result = Union[DecodedVideo, VideoError, Any]  # Any: a CallRequest's value

__all__ = ["CallRequest", "DecodePool", "DecodeRequest", "DecodedVideo", "decode_clips", "run_isolated"]


class _Worker:
    """One child process and the pipe to it."""

    def __init__(self, config: dict[str, Any]):
        self.proc = ChildProcess("vcl_infer.video._worker:worker_main", (config,))
        self.conn = self.proc.conn
        self.ready = False
        self.done = 0
        self.task: tuple[int, DecodeRequest | CallRequest, float] | None = None  # index, request, deadline

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.is_alive():
            self.proc.kill()  # SIGKILL: native code cannot ignore it
        self.proc.join(5)
        self.conn.close()
        self.proc.remove_log()


class DecodePool:
    """Persistent worker processes that turn video files into clips.

    Args:
        workers: number of child processes.
        timeout_s: hard wall-clock limit per file, from the moment a ready worker gets it.
        max_pixels: frame size cap (width x height).
        backend: ``auto``, ``decord`` or ``pyav`` (see :func:`vcl_infer.video.open_video`).
        threads_per_worker: decoder threads in each worker; 1 keeps ``workers`` workers
            from oversubscribing the cores the encoder also needs.
        max_tasks_per_worker: a worker is replaced after this many files (leak guard,
            decord issues 1, 157, 208).
        memory_limit_bytes: optional ``RLIMIT_AS`` for each worker, so a decompression
            bomb fails in the worker instead of exhausting the machine.
        nice: niceness added to the workers' (0: the caller's priority).
        batch: run the workers under ``SCHED_BATCH`` (Linux): the same CPU share, but they
            never preempt the caller's threads on wake-up.

    Use as a context manager; :meth:`imap` yields one result per request.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 30.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        backend: str = "auto",
        *,
        threads_per_worker: int = 1,
        max_tasks_per_worker: int = 200,
        memory_limit_bytes: int | None = None,
        nice: int = 0,
        batch: bool = False,
    ):
        if workers < 1 or timeout_s <= 0 or max_tasks_per_worker < 1:
            raise ValueError("need workers >= 1, timeout_s > 0 and max_tasks_per_worker >= 1")
        self.timeout_s = float(timeout_s)
        self.max_tasks = max_tasks_per_worker
        self._config = {
            "nice": int(nice),
            "batch": bool(batch),
            "backend": backend,
            "max_pixels": int(max_pixels),
            "num_threads": int(threads_per_worker),
            "memory_limit_bytes": memory_limit_bytes,
        }
        self._workers = [_Worker(self._config) for _ in range(workers)]
        self._failed_starts = 0

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker (politely, then SIGKILL after 2 s; one still starting, which has
        no task, is killed at once: a build with nothing to decode does not wait for imports)."""
        for w in self._workers:
            if not w.ready:
                w.kill()
                continue
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            if w.proc is not None and w.ready:
                w.proc.join(2)
            w.kill()
        self._workers = []

    def imap(self, requests: Iterable[Request]) -> Iterator[Result]:
        """Decode ``requests`` and yield their results in submission order.

        Each request is a :class:`DecodeRequest`, a ``(path, ClipSpec, num_clips)`` tuple or
        a :class:`CallRequest`; each result is a :class:`DecodedVideo` (the function's value
        for a call) or the :class:`VideoError` for that file.
        Requests are pulled from the iterable only as workers free up.
        """
        buffered: dict[int, Result] = {}
        following = 0
        for index, result in self.imap_unordered(requests):
            buffered[index] = result
            while following in buffered:
                yield buffered.pop(following)
                following += 1

    def imap_unordered(self, requests: Iterable[Request], *, parts: bool = False) -> Iterator[tuple[int, Any]]:
        """Like :meth:`imap` but yields ``(submission index, result)`` in completion order.

        With ``parts=True`` a video's clips arrive as they are decoded: zero or more
        ``(index, ClipBatch)``, then ``(index, DecodedVideo)`` holding the last batch (or
        ``(index, VideoError)``, which voids the parts before it), so the caller never holds
        a long video's clips at once. The time limit restarts with each part.
        """
        if parts:
            yield from self._imap_parts(requests)
            return
        pending: dict[int, list] = {}
        for index, result in self._imap_parts(requests):
            if isinstance(result, ClipBatch):
                pending.setdefault(index, []).append(result)
            elif isinstance(result, DecodedVideo):
                yield index, collect(iter([*pending.pop(index, []), result]))
            else:
                pending.pop(index, None)
                yield index, result

    def _imap_parts(self, requests: Iterable[Request]) -> Iterator[tuple[int, Any]]:
        if not self._workers:
            raise RuntimeError("the DecodePool is closed")
        source = iter(enumerate(_as_request(r) for r in requests))
        queue: deque[tuple[int, DecodeRequest | CallRequest]] = deque()
        exhausted = False
        try:
            while True:
                idle = [w for w in self._workers if w.ready and w.task is None]
                while idle and not exhausted:
                    if not queue:
                        nxt = next(source, None)
                        if nxt is None:
                            exhausted = True
                            break
                        queue.append(nxt)
                    index, request = queue.popleft()
                    worker = idle.pop()
                    worker.task = (index, request, time.monotonic() + self.timeout_s)
                    worker.conn.send((index, request))
                if exhausted and not queue and all(w.task is None for w in self._workers):
                    return
                yield from self._collect()
        finally:
            # an abandoned generator leaves work in flight: those workers are replaced
            for i, w in enumerate(self._workers):
                if w.task is not None:
                    w.kill()
                    self._workers[i] = _Worker(self._config)

    def _collect(self) -> Iterator[tuple[int, Result]]:
        """Wait for messages, deaths or the earliest deadline; yield finished results."""
        deadlines = [w.task[2] for w in self._workers if w.task is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        handles: list[Any] = [h for w in self._workers for h in w.proc.handles()]
        ready = set(wait(handles, timeout))
        for i, w in enumerate(list(self._workers)):
            outcome = None
            if any(h in ready for h in w.proc.handles()):
                outcome = self._receive(w)
            elif w.task is not None and time.monotonic() >= w.task[2]:
                index, request, _ = w.task
                reason = f"no result within {self.timeout_s:g} s; decoder killed" + _last_words(w.proc)
                outcome = (index, DecodeTimeout(request.path, reason))
                w.kill()
                w.proc = None  # type: ignore[assignment]
            if w.proc is None or not w.proc.is_alive() or w.done >= self.max_tasks:
                self._replace(i, w)
            if outcome is not None:
                yield outcome

    def _receive(self, w: _Worker) -> tuple[int, Result] | None:
        try:
            if w.conn.poll():
                message = w.conn.recv()
                if message[0] == "ready":
                    w.ready, self._failed_starts = True, 0
                    return None
                kind, index, result = message
                if kind == "alive":  # a long pass still advancing (no clip out yet): the limit restarts
                    w.task = (index, w.task[1], time.monotonic() + self.timeout_s) if w.task else None
                    return None
                if kind == "part":  # a long video in progress: its time limit restarts
                    w.task = (index, w.task[1], time.monotonic() + self.timeout_s) if w.task else None
                    return index, result
                if w.task is not None:
                    log_decoder_output(w.task[1].path, w.proc)
                w.task, w.done = None, w.done + 1
                return index, result
        except (EOFError, OSError):
            pass
        # the pipe is closed or the process ended: the worker died
        w.proc.join(1)
        code = w.proc.exitcode
        said = _last_words(w.proc)
        w.kill()
        w.proc = None  # type: ignore[assignment]
        if w.task is None:
            if not w.ready:
                self._failed_starts += 1
                if self._failed_starts >= 3:
                    raise RuntimeError(f"decode workers die while starting (exit code {code}){said}")
            return None
        index, request, _ = w.task
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return index, DecoderCrashed(request.path, f"decoder process died ({how}){said}")

    def _replace(self, i: int, w: _Worker) -> None:
        if w.proc is not None:
            if w.task is not None:
                return  # still working on its last task
            try:
                w.conn.send(None)  # retire after max_tasks: a clean exit
            except OSError:
                pass
            w.proc.join(2)
            w.kill()
        self._workers[i] = _Worker(self._config)


def _last_words(child: ChildProcess) -> str:
    said = child.last_words()
    return f"; its last message: {said}" if said else ""


def _as_request(request: Request) -> DecodeRequest | CallRequest:
    if isinstance(request, (DecodeRequest, CallRequest)):
        return request
    path, spec, num_clips = request
    return DecodeRequest(os.fspath(path), spec, num_clips if isinstance(num_clips, ClipSampling) else int(num_clips))


def _one_off(request: Request, timeout_s: float, **pool_options: Any) -> Any:
    """``request``'s result from a one-off worker (about 1 s of start-up); its error raised."""
    with DecodePool(1, timeout_s, **pool_options) as pool:
        (result,) = list(pool.imap([request]))
    if isinstance(result, VideoError):
        raise result
    return result


def decode_clips(
    path: str | os.PathLike,
    spec: ClipSpec,
    num_clips: int | ClipSampling,
    *,
    timeout_s: float = 30.0,
    backend: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedVideo:
    """Decode one file in a one-off child process (about 1 s of start-up).

    Returns:
        A :class:`DecodedVideo` (``clips``: ``N x T x S x S x 3`` uint8).

    Raises:
        VideoError: the file's error, ``DecodeTimeout`` or ``DecoderCrashed``.
    """
    return _one_off((path, spec, num_clips), timeout_s, backend=backend, max_pixels=max_pixels)


def run_isolated(fn: Callable[..., Any], args: tuple, path: str | os.PathLike, timeout_s: float = 60.0) -> Any:
    """``fn(*args)`` in a one-off decode worker, with the pool's timeout and crash handling.

    For reads of an untrusted file other than :func:`decode_clips` (a query's time range,
    thumbnails). ``fn`` must be a module-level function; its arguments and value travel
    between the processes like the pool's messages.

    Args:
        fn: the function, importable as ``fn.__module__`` + ``fn.__qualname__``.
        args: its positional arguments.
        path: the file it reads, named in the errors.
        timeout_s: hard wall-clock limit, from the moment the worker is ready.

    Returns:
        What ``fn`` returned.

    Raises:
        VideoError: the function's own, ``DecodeTimeout``, or ``DecoderCrashed`` (also for an
            exception other than a :class:`VideoError` inside ``fn``).
    """
    target = f"{fn.__module__}:{fn.__qualname__}"
    return _one_off(CallRequest(os.fspath(path), target, tuple(args)), timeout_s)
