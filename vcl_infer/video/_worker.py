"""The decode worker process: receives requests on a pipe, answers with clips or errors.

Runs in a fresh child interpreter started by :mod:`vcl_infer.video._child` (never ``fork``:
FFmpeg and decord threads are not fork-safe, reliability.md A15). Whatever happens in here (a native crash, an infinite loop holding the
GIL, an allocation that exhausts the memory limit), the parent only loses this process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from vcl_infer.clips.spec import ClipSpec


@dataclass(frozen=True)
class DecodeRequest:
    """One file to decode into clips of ``spec``.

    Attributes:
        path: the video file.
        spec: how frames become clips.
        num_clips: N uniformly spaced clips, or a :class:`vcl_infer.clips.sampling.ClipSampling`
            (a stride in seconds with a floor and a cap).
        test_fault: tests only: ``"hang"``, ``"exit"``, ``"kill"`` or ``"abort"`` makes the
            worker misbehave that way instead of decoding.
    """

    path: str
    spec: ClipSpec
    num_clips: Any = 1
    test_fault: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CallRequest:
    """Run ``target(*args)`` in a worker instead of :func:`read_clips` (e.g. a range query).

    Attributes:
        path: the untrusted file the call reads; it names the file in timeouts and crashes.
        target: a module-level function as ``"module:function"``.
        args: its arguments (sent to the worker like any message).
    """

    path: str
    target: str
    args: tuple = ()
    test_fault: str | None = field(default=None, repr=False)


def _run(request: DecodeRequest | CallRequest, config: dict[str, Any]) -> Iterator[Any]:
    """The request's results: the file's clip parts then its last part, or the called
    function's value alone."""
    if isinstance(request, CallRequest):
        import importlib

        module, _, name = request.target.partition(":")
        yield getattr(importlib.import_module(module), name)(*request.args)
        return
    from vcl_infer.video.clips import stream_clips

    yield from stream_clips(
        request.path,
        request.spec,
        request.num_clips,
        backend=config["backend"],
        max_pixels=config["max_pixels"],
        num_threads=config["num_threads"],
    )


def _misbehave(fault: str) -> None:
    if fault == "hang":
        while True:  # a native decoder stuck in a loop looks like this from outside
            time.sleep(3600)
    if fault == "exit":
        os._exit(3)
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "abort":
        os.abort()


def _lower_priority(nice: int, batch: bool) -> None:
    """Nice this worker by ``nice`` and, with ``batch``, put it in ``SCHED_BATCH``.

    ``SCHED_BATCH`` keeps the worker's CPU share (its weight is its nice value's) but its
    wake-ups never preempt a running thread, so the encoder's threads run their parallel
    operators without being cut by a decoder. A large nice would instead make the workers
    nearly idle-class: beside any other job (weight 1024 against 110 at nice 10) decoding
    starves. Decoder threads started later inherit both settings.
    """
    if nice:
        os.nice(nice)
    if batch and hasattr(os, "SCHED_BATCH"):
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass  # not permitted here (or not Linux): the worker runs as a normal process


def _exit_now() -> None:
    """Leave at once when told to stop: the worker holds nothing to flush but its standard
    streams, and the interpreter's teardown of numpy, PyAV and decord (about 0.1-0.2 s) was
    time every pool's ``close`` waited for (a build's end, each one-off range query)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(0)


def worker_main(conn: Any, config: dict[str, Any]) -> None:
    """Serve requests until told to stop (``None``) or the parent goes away.

    Messages to the parent: ``("ready", pid)`` once imports are done (so import time never
    counts against a file's timeout), then per request zero or more ``("part", index,
    ClipBatch)`` (a long video streams its clips a bounded batch at a time; the pipe's
    buffer holds the worker back while the parent is busy), ``("alive", index, None)`` at
    most once a second while a reader reports progress on a long pass, and one ``("done", index,
    result | VideoError)``: the result is the last ``DecodedVideo`` part for a
    :class:`DecodeRequest`, the function's value for a :class:`CallRequest` (which sends no parts).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _lower_priority(int(config.get("nice") or 0), bool(config.get("batch")))
    limit = config.get("memory_limit_bytes")
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    import vcl_infer.video.clips  # noqa: F401 - imported now, not inside the first timed task
    from vcl_infer.errors import DecoderCrashed, VideoError
    from vcl_infer.video.clips import ClipBatch
    from vcl_infer.video.reader import set_progress_hook

    for module in ("decord", "av"):  # likewise the decoders, where installed
        try:
            __import__(module)
        except ImportError:
            pass
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            _exit_now()
        index, request = message
        if request.test_fault:
            _misbehave(request.test_fault)
        set_progress_hook(_alive(conn, index))
        try:
            result: Any = None
            for result in _run(request, config):
                if isinstance(result, ClipBatch):
                    conn.send(("part", index, result))
        except VideoError as exc:
            result = exc
        except MemoryError:
            result = DecoderCrashed(request.path, "out of memory while decoding (worker memory limit)")
        except Exception as exc:  # noqa: BLE001 - one file's bug must not end the worker
            result = DecoderCrashed(request.path, f"unexpected {type(exc).__name__}: {exc}")
        set_progress_hook(None)
        conn.send(("done", index, result))


def _alive(conn: Any, index: int, every_s: float = 1.0):
    """A progress hook sending ``("alive", index, None)`` at most every ``every_s`` seconds."""
    import time

    last = [time.monotonic()]

    def hook() -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            conn.send(("alive", index, None))

    return hook
