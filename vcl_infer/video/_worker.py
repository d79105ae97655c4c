"""The decode worker process: receives requests on a pipe, answers with clips or errors.

Runs in a ``spawn``-ed child (never ``fork``: FFmpeg and decord threads are not fork-safe,
reliability.md A15). Whatever happens in here (a native crash, an infinite loop holding the
GIL, an allocation that exhausts the memory limit), the parent only loses this process.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from vcl_infer.spec import ClipSpec


@dataclass(frozen=True)
class DecodeRequest:
    """One file to decode into clips of ``spec``.

    Attributes:
        path: the video file.
        spec: how frames become clips.
        num_clips: N uniformly spaced clips, or a :class:`vcl_infer.sampling.ClipSampling`
            (a stride in seconds with a floor and a cap).
        test_fault: tests only: ``"hang"``, ``"exit"``, ``"kill"`` or ``"abort"`` makes the
            worker misbehave that way instead of decoding.
    """

    path: str
    spec: ClipSpec
    num_clips: Any = 1
    test_fault: str | None = field(default=None, repr=False)


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


def worker_main(conn: Any, config: dict[str, Any]) -> None:
    """Serve requests until told to stop (``None``) or the parent goes away.

    Messages to the parent: ``("ready", pid)`` once imports are done (so import time never
    counts against a file's timeout), then per request zero or more ``("part", index,
    ClipBatch)`` (a long video streams its clips a bounded batch at a time; the pipe's
    buffer holds the worker back while the parent is busy) and one ``("done", index,
    DecodedVideo | VideoError)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if config.get("nice"):  # lower priority: the encoder comes first, decoding fills idle cores
        os.nice(int(config["nice"]))
    limit = config.get("memory_limit_bytes")
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    from vcl_infer.errors import DecoderCrashed, VideoError
    from vcl_infer.video.clips import ClipBatch, stream_clips

    for module in ("decord", "av"):  # import decoders now, not inside the first timed task
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
            return
        index, request = message
        if request.test_fault:
            _misbehave(request.test_fault)
        try:
            for result in stream_clips(
                request.path,
                request.spec,
                request.num_clips,
                backend=config["backend"],
                max_pixels=config["max_pixels"],
                num_threads=config["num_threads"],
            ):
                if isinstance(result, ClipBatch):
                    conn.send(("part", index, result))
        except VideoError as exc:
            result = exc
        except MemoryError:
            result = DecoderCrashed(request.path, "out of memory while decoding (worker memory limit)")
        except Exception as exc:  # noqa: BLE001 - one file's bug must not end the worker
            result = DecoderCrashed(request.path, f"unexpected {type(exc).__name__}: {exc}")
        conn.send(("done", index, result))
