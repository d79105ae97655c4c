"""A video file to fitted uint8 clips, in the current process.

:func:`read_clips` is the unit of work decode workers run (see
:mod:`vcl_infer.video.isolated`): open, sample clip windows from the decoded frames'
timestamps, decode the union of their frames once, resize and crop each clip. Its output is
small (``N x T x S x S x 3`` uint8), so it crosses process boundaries cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from vcl_infer.errors import VideoError
from vcl_infer.preprocess import fit_frames, resized_size
from vcl_infer.sampling import ClipWindow, uniform_clips
from vcl_infer.spec import ClipSpec
from vcl_infer.video.open import DEFAULT_MAX_PIXELS, open_video
from vcl_infer.video.reader import VideoInfo, VideoReader


@dataclass
class DecodedVideo:
    """Clips of one video, ready for :func:`vcl_infer.preprocess.to_model_input`.

    Attributes:
        path: the file as requested.
        info: what the reader learned (``info.backend`` says which decoder).
        clips: ``N x T x S x S x 3`` uint8 RGB, ``S = spec.crop_size``, already fitted.
        windows: the N clip windows (frame indices, ``start_sec``, ``end_sec``).
        damaged_frames: frames that failed to decode and were replaced by their nearest
            decoded neighbour (0 for a clean read).
    """

    path: str
    info: VideoInfo
    clips: np.ndarray
    windows: list[ClipWindow] = field(default_factory=list)
    damaged_frames: int = 0


def inside_video(windows: list[ClipWindow], reader: VideoReader) -> list[ClipWindow]:
    """``windows`` with each end cut at the end of the video (first timestamp + duration).

    The sampler ends a clip whose last frame is the video's last one a median frame step
    after it; on variable frame rate (frames at 0 s, 1 h, 10 h) that is hours past the end.
    """
    end = float(reader.timestamps[0]) + float(reader.info.duration)
    return [w if w.end_sec <= end else ClipWindow(w.indices, w.start_sec, max(w.start_sec, end)) for w in windows]


DECORD_MIN_SHRINK = 16
"""decord scales inside the decoder only for frames at least this many times the target area."""


def decoder_size(info: VideoInfo, spec: ClipSpec) -> tuple[int, int] | None:
    """``(height, width)`` the decoder should scale frames to for ``spec`` (the size
    :func:`~vcl_infer.preprocess.fit_frames` resizes to), or None to decode at full size.

    Only shrinking is done in the decoder: FFmpeg's scaler then costs a fraction of the numpy
    resize of full frames (which cost as much CPU as decoding itself), and ``fit_frames`` is
    left with the crop. Its pixels differ from the numpy filter's by a little (see
    ``tests/test_decoder_resize.py`` for the stated tolerance).
    """
    out = resized_size(info.height, info.width, spec)
    if out == (info.height, info.width) or out[0] > info.height or out[1] > info.width:
        return None
    if info.backend == "decord" and out[0] * out[1] * DECORD_MIN_SHRINK > info.height * info.width:
        return None  # decord scales in a second reader: opening it costs more than a small resize
    return out


def _sample(reader: VideoReader, spec: ClipSpec, num_clips: int,
            decoder_resize: bool = True) -> tuple[list[ClipWindow], np.ndarray, dict[int, int]]:
    """Clip windows, and the frames of their union (each frame decoded once) with a lookup."""
    windows = inside_video(uniform_clips(reader.timestamps, spec, num_clips), reader)
    union = np.unique(np.concatenate([w.indices for w in windows]))
    size = decoder_size(reader.info, spec) if decoder_resize else None
    frames = reader.get_frames(union, size) if size else reader.get_frames(union)
    return windows, frames, {int(i): k for k, i in enumerate(union)}


def clips_from_reader(reader: VideoReader, path: str, spec: ClipSpec, num_clips: int) -> DecodedVideo:
    """Sample ``num_clips`` uniform clips from an opened reader and fit them to the spec."""
    return _fit(reader, path, spec, *_sample(reader, spec, num_clips))


def _fit(
    reader: VideoReader,
    path: str,
    spec: ClipSpec,
    windows: list[ClipWindow],
    frames: np.ndarray,
    position: dict[int, int],
) -> DecodedVideo:
    clips = np.stack([fit_frames(frames[[position[int(i)] for i in w.indices]], spec) for w in windows])
    damaged = int(getattr(reader, "failed_frames", 0))
    return DecodedVideo(path=path, info=reader.info, clips=clips, windows=windows, damaged_frames=damaged)


def read_clips(
    path: str | os.PathLike,
    spec: ClipSpec,
    num_clips: int,
    *,
    backend: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_threads: int = 0,
    decoder_resize: bool = True,
) -> DecodedVideo:
    """Decode ``num_clips`` uniformly spaced clips of ``path`` in this process.

    ``decoder_resize``: shrink frames inside the decoder (see :func:`decoder_size`); False
    resizes full-size frames with :func:`~vcl_infer.preprocess.fit_frames` only.

    With ``backend="auto"``, a decord read that had to patch undecodable frames, or that
    decoded nothing, is redone with PyAV, which skips bad packets and usually recovers more
    frames (``decord/corrupted.mp4``: decord 11 of 50, PyAV 49). If PyAV fails too, the
    patched decord frames are used, or decord's error is raised.

    Returns:
        A :class:`DecodedVideo`.

    Raises:
        VideoError: the file cannot be read (the subclass says why).
    """
    shown = os.fspath(path)
    reader = open_video(shown, backend, max_pixels, num_threads=num_threads)
    try:
        sampled = _sample(reader, spec, num_clips, decoder_resize)
        error: VideoError | None = None
    except VideoError as exc:
        sampled, error = None, exc
    finally:
        reader.close()
    damaged = int(getattr(reader, "failed_frames", 0))
    if backend == "auto" and reader.info.backend == "decord" and (error is not None or damaged):
        # fitting is the costly step on large frames: only fit the result that is kept
        try:
            return read_clips(shown, spec, num_clips, backend="pyav", max_pixels=max_pixels, num_threads=num_threads,
                              decoder_resize=decoder_resize)
        except VideoError:
            pass
    if sampled is None:
        raise error  # type: ignore[misc]
    return _fit(reader, shown, spec, *sampled)
