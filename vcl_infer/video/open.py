"""Open a video safely and pick the decoder: decord first, PyAV for what decord cannot do.

The order of checks (each cheaper and safer than the next):

1. the path is a regular file (``os.stat``; a FIFO or device is never opened);
2. its first bytes are not empty or text (HLS/ffconcat/SDP playlists renamed ``.mp4``);
3. PyAV probes the headers with ``protocol_whitelist=file`` and a demuxer whitelist:
   a video stream must exist and its frame size must be under the cap, before any frame is
   decoded. decord has no whitelist of its own, so it only sees files that passed this probe;
4. the backend opens the file; with ``auto``, any decord failure (no-duration WebM, 1x1
   frames, an unopenable codec) falls back to PyAV.

Decoding untrusted files in-process can still hang or crash the process; use
:mod:`vcl_infer.video.isolated` for that.
"""

from __future__ import annotations

import os

from vcl_infer.errors import CorruptVideo, FrameTooLarge, MissingDependency, VideoError
from vcl_infer.video._guards import regular_file, sniff
from vcl_infer.video.reader import VideoReader

BACKENDS = ("auto", "decord", "pyav")
DEFAULT_MAX_PIXELS = 4096 * 4096


def probe(path: str, shown: str, max_pixels: int) -> int:
    """Check stream headers with PyAV; return the index of the video stream to read.

    Raises:
        UnsupportedFormat: FFmpeg cannot open it with the whitelists.
        NoVideoStream: audio-only (or no streams at all).
        FrameTooLarge: the header's width x height is over ``max_pixels``.
    """
    from vcl_infer.video.pyav_reader import open_container, video_stream

    with open_container(path, shown) as container:
        stream = video_stream(container, shown)
        ctx = stream.codec_context
        if ctx.width * ctx.height > max_pixels:
            raise FrameTooLarge(
                shown, f"frames are {ctx.width}x{ctx.height}, over the cap of {max_pixels} pixels"
            )
        return int(stream.index)


def open_video(
    path: str | os.PathLike,
    backend: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    num_threads: int = 0,
) -> VideoReader:
    """Open ``path`` for reading frames.

    Args:
        path: a local video file.
        backend: ``auto`` (decord, then PyAV), ``decord`` or ``pyav``.
        max_pixels: width x height cap, checked on headers before decoding.
        num_threads: decoder threads per reader; 0 lets the decoder choose.

    Returns:
        A :class:`VideoReader`; ``reader.info.backend`` says which decoder it is.

    Raises:
        VideoError: a subclass saying why the file cannot be read.
        ValueError: an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; valid: {', '.join(BACKENDS)}")
    shown = os.fspath(path)
    resolved = regular_file(shown)
    sniff(resolved, shown)
    stream_index = _guarded(shown, probe, resolved, shown, max_pixels)
    if backend in ("auto", "decord"):
        try:
            return _guarded(shown, _decord, resolved, max_pixels, num_threads, stream_index)
        except (VideoError, MissingDependency):
            if backend == "decord":
                raise
    return _guarded(shown, _pyav, resolved, max_pixels, num_threads)


def _decord(path: str, max_pixels: int, num_threads: int, stream_index: int) -> VideoReader:
    from vcl_infer.video.decord_reader import DecordReader

    return DecordReader(path, max_pixels=max_pixels, num_threads=num_threads, stream_index=stream_index)


def _pyav(path: str, max_pixels: int, num_threads: int) -> VideoReader:
    from vcl_infer.video.pyav_reader import PyAvReader

    return PyAvReader(path, max_pixels=max_pixels, num_threads=num_threads)


def _guarded(shown: str, fn, *args):  # type: ignore[no-untyped-def]
    """Call ``fn``; turn any unexpected Python exception into :class:`CorruptVideo`.

    Decoders raise a zoo of exception types on bad input (``IndexError`` from PyAV on an
    empty moov, ``EOFError``, ``OSError``...); callers should only ever see VideoError.
    """
    try:
        return fn(*args)
    except (VideoError, MissingDependency):
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - see docstring
        raise CorruptVideo(shown, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
