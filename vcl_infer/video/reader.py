"""The reader protocol every decoder backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, Union, runtime_checkable

import numpy as np

FrameIndices = Union[Sequence[int], np.ndarray]
"""Frame numbers: a list or a 1-D integer array."""

_progress_hook: Callable[[], None] | None = None


def set_progress_hook(hook: Callable[[], None] | None) -> None:
    """Install (or, with None, remove) what :func:`report_progress` calls: a decode worker
    tells its parent the read is advancing, which restarts the file's time limit."""
    global _progress_hook
    _progress_hook = hook


def report_progress() -> None:
    """Called by readers every few hundred frames of a long pass (PyAV's scan of an hour of
    video decodes every frame before the first clip is out): a decoder that advances is not
    hung, so its time limit restarts; one that stops still times out."""
    if _progress_hook is not None:
        _progress_hook()


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows about an opened video.

    Attributes:
        path: the file.
        backend: decoder that opened it (``decord`` or ``pyav``).
        num_frames: decodable frames (after clamping what the container claims).
        fps: average frame rate (frames / duration); informative only, sample on timestamps.
        duration: seconds from the first frame's start to the last frame's end.
        width, height: frame size as displayed (after rotation).
        rotation: degrees of the container's rotation tag that were applied (0, 90, 180, 270).
        codec: codec name of the video stream.
        claimed_frames: frame count the container claims (-1 unknown); differs from
            ``num_frames`` for truncated or lying files.
        stream_index: container stream that was read (FFmpeg's best video stream, the one
            both backends pick), so files with several video streams say which one.
    """

    path: str
    backend: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int = 0
    codec: str = ""
    claimed_frames: int = -1
    stream_index: int = -1

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@runtime_checkable
class VideoReader(Protocol):
    """An opened video.

    ``timestamps`` are the presentation times (seconds, float64, non-decreasing, in
    presentation order) of the ``info.num_frames`` decodable frames; frame ``i`` of
    :meth:`get_frames` is the frame shown at ``timestamps[i]``.
    """

    info: VideoInfo

    @property
    def timestamps(self) -> np.ndarray: ...

    def get_frames(self, indices: FrameIndices, size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames at ``indices`` (clamped to ``[0, num_frames)``) as ``T x H x W x 3`` uint8 RGB,
        scaled to ``size = (H, W)`` inside the decoder when given (full size otherwise)."""
        ...

    def close(self) -> None: ...
