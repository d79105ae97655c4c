"""Typed errors of the runtime.

Every failure to read a video becomes a :class:`VideoError` subclass that names the file
and the cause, so an index build can record it per file and go on.
"""

from __future__ import annotations


class VclError(Exception):
    """Base class of every error vcl raises on purpose."""


class MissingDependency(VclError, ImportError):
    """An optional package is not installed; the message names the extra to install."""


class VideoError(VclError):
    """A video could not be read.

    Attributes:
        path: the file that failed.
        reason: a one-line human description of the cause.
    """

    kind = "unreadable"

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # keeps the error intact across process boundaries
        return (type(self), (self.path, self.reason))


class NotARegularFile(VideoError):
    """The path is a directory, FIFO, device or socket (which may block forever)."""

    kind = "not_a_regular_file"


class UnsupportedFormat(VideoError):
    """The bytes are not a video container we accept (text, playlist, image, ...)."""

    kind = "unsupported_format"


class NoVideoStream(VideoError):
    """The container holds no video stream (an audio-only file, say)."""

    kind = "no_video_stream"


class FrameTooLarge(VideoError):
    """Frames are larger than the width x height cap (a decompression-bomb guard)."""

    kind = "frame_too_large"


class CorruptVideo(VideoError):
    """The container opened but no requested frame could be decoded."""

    kind = "corrupt"


class DecodeTimeout(VideoError):
    """Decoding took longer than the hard time limit; the worker was killed."""

    kind = "timeout"


class DecoderCrashed(VideoError):
    """The decoding child process died (native crash, abort, out of memory)."""

    kind = "decoder_crashed"


class SpecMismatch(VclError):
    """An input or a model does not match the spec it is used with."""
