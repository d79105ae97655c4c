"""A video file to fitted uint8 clips, in the current process, a bounded batch at a time.

:func:`stream_clips` is the unit of work decode workers run (see
:mod:`vcl_infer.video.isolated`): open, sample clip windows from the decoded frames'
timestamps (a stride in seconds or a fixed count, :class:`vcl_infer.clips.sampling.ClipSampling`),
then decode the frames of consecutive clips in groups of at most ``MAX_BATCH_BYTES`` of
decoded frames (each frame once per group, one pass of a sequential decoder per group), and
fit and hand them on ``PART_CLIPS`` clips at a time, so memory is bounded by the group
whatever the video's length: an hour of video never sits in memory as frames or clips. :func:`read_clips` collects the batches of a (short) video into one
:class:`DecodedVideo`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Generator, Iterator, Union

import numpy as np

from vcl_infer.clips.preprocess import fit_frames, resized_size
from vcl_infer.clips.sampling import ClipSampling, ClipWindow, sample_windows
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import VideoError
from vcl_infer.video.open import DEFAULT_MAX_PIXELS, open_video
from vcl_infer.video.reader import VideoInfo, VideoReader

MAX_BATCH_BYTES = 48 << 20
"""Decoded source frames held at once (at the decoder's output size, before fitting): the decode memory
bound. Counted in bytes so a 4K video gets small groups (at least one clip)."""
PART_CLIPS = 16
"""Fitted clips handed on at once (one message from a decode worker)."""
GROUP_FRAMES = 512
"""Frames decoded per group at most (with ``MAX_BATCH_BYTES``)."""
LONG_VIDEO_FRAMES = 3000
"""A video of more frames (100 s at 30 fps) whose clips are dense (``DENSE_FRACTION``) is read by
PyAV in one sequential pass under ``backend="auto"``: decord's resident memory grows with the
length of the file it seeks in (decode work alone on 64 x 64 video, ``benchmarks/moment_memory.py
--decoders``: decord 117 / 167 / 191 MiB at 1 / 5 / 60 minutes, PyAV 102 / 110 / 117), and for
clips a second apart one pass is about as fast as seeking (an hour: PyAV 46 s, decord 61 s)."""
DENSE_FRACTION = 0.25
"""Clips are dense when their frames (clips x frames per clip) are at least this fraction of the
video's: then nearly every GOP is decoded anyway. A few clips of a long video (``--clips 8``) are
left to decord's seeking, which decodes a small part of the file."""

Sampling = Union[int, ClipSampling]


@dataclass
class DecodedVideo:
    """Clips of one video, ready for :func:`vcl_infer.clips.preprocess.to_model_input`.

    Attributes:
        path: the file as requested.
        info: what the reader learned (``info.backend`` says which decoder).
        clips: ``N x T x S x S x 3`` uint8 RGB, ``S = spec.crop_size``, already fitted.
        windows: the N clip windows (frame indices, ``start_sec``, ``end_sec``).
        damaged_frames: frames that failed to decode and were replaced by their nearest
            decoded neighbour (0 for a clean read).
        streamed: clips sent before this object as :class:`ClipBatch` parts (a streamed
            read's final message holds only the last batch; 0 for a whole read).
    """

    path: str
    info: VideoInfo
    clips: np.ndarray
    windows: list[ClipWindow] = field(default_factory=list)
    damaged_frames: int = 0
    streamed: int = 0


@dataclass
class ClipBatch:
    """Consecutive clips of a video that is still being decoded (a streamed read's part).

    Attributes:
        path: the file.
        clips: ``n x T x S x S x 3`` uint8, fitted.
        windows: their n clip windows.
    """

    path: str
    clips: np.ndarray
    windows: list[ClipWindow]


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
    :func:`~vcl_infer.clips.preprocess.fit_frames` resizes to), or None to decode at full size.

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


def _frame_budget(reader: VideoReader, max_bytes: int, size: tuple[int, int] | None) -> int:
    """Frames decoded in one group: those that fit in ``max_bytes`` (RGB, at the size the
    decoder delivers: ``size`` or full), and at most ``GROUP_FRAMES``, so parts come out
    steadily (each restarts the worker's time limit) and a low-resolution video holds no
    more frames than it needs. PyAV serves all groups from one sequential pass
    (``iter_groups``), so small groups cost it no extra decoding."""
    height, width = size or (int(reader.info.height), int(reader.info.width))
    fit = max(1, int(max_bytes) // max(1, 3 * int(width) * int(height)))
    return min(fit, GROUP_FRAMES)


def _batches(windows: list[ClipWindow], max_frames: int) -> Iterator[list[ClipWindow]]:
    """Consecutive groups of windows whose frames' union stays within ``max_frames``."""
    group: list[ClipWindow] = []
    frames: set[int] = set()
    for window in windows:
        fresh = {int(i) for i in window.indices} - frames
        if group and len(frames) + len(fresh) > max_frames:
            yield group
            group, frames, fresh = [], set(), {int(i) for i in window.indices}
        group.append(window)
        frames |= fresh
    if group:
        yield group


def _decode_parts(reader: VideoReader, spec: ClipSpec, windows: list[ClipWindow], max_bytes: int,
                  decoder_resize: bool = True) -> Iterator[tuple[np.ndarray, list[ClipWindow]]]:
    """``(fitted clips, their windows)``, ``PART_CLIPS`` at a time, in order; the frames of each
    group of clips are decoded once, in one request to the reader (scaled by the decoder
    where :func:`decoder_size` says so, unless ``decoder_resize`` is False)."""
    size = decoder_size(reader.info, spec) if decoder_resize else None
    groups = list(_batches(windows, _frame_budget(reader, max_bytes, size)))
    unions = [np.unique(np.concatenate([w.indices for w in group])) for group in groups]
    if hasattr(reader, "iter_groups"):  # a sequential decoder: every group from one pass
        decoded = reader.iter_groups(unions, size)
    else:  # a seeking one: a request per group
        decoded = (reader.get_frames(union, size) if size else reader.get_frames(union) for union in unions)
    for group, union, frames in zip(groups, unions, decoded):
        position = {int(i): k for k, i in enumerate(union)}
        for s in range(0, len(group), PART_CLIPS):
            part = group[s : s + PART_CLIPS]
            yield np.stack([fit_frames(frames[[position[int(i)] for i in w.indices]], spec) for w in part]), part
        del frames


def _damaged(reader: VideoReader) -> int:
    return int(getattr(reader, "failed_frames", 0))


def fit_windows(reader: VideoReader, spec: ClipSpec, windows: list[ClipWindow],
                max_bytes: int = MAX_BATCH_BYTES) -> np.ndarray:
    """``N x T x S x S x 3`` fitted clips of ``windows``, decoding ``max_bytes`` of frames at a time."""
    return np.concatenate([clips for clips, _ in _decode_parts(reader, spec, windows, max_bytes)])


def clips_from_reader(reader: VideoReader, path: str, spec: ClipSpec, num_clips: Sampling) -> DecodedVideo:
    """Sample clips (a count or a :class:`ClipSampling`) from an opened reader and fit them."""
    windows = inside_video(sample_windows(reader.timestamps, spec, num_clips), reader)
    return DecodedVideo(path=path, info=reader.info, clips=fit_windows(reader, spec, windows), windows=windows,
                        damaged_frames=_damaged(reader))


def _read_in_one_pass(reader: VideoReader, spec: ClipSpec, num_clips: Sampling) -> bool:
    """Whether a video decord opened is better read by PyAV's single pass: long, and sampled
    densely (see ``LONG_VIDEO_FRAMES`` and ``DENSE_FRACTION``)."""
    frames = int(reader.info.num_frames)
    if frames <= LONG_VIDEO_FRAMES:
        return False
    clips = len(sample_windows(reader.timestamps, spec, num_clips))
    return clips * spec.frames_per_clip >= DENSE_FRACTION * frames



def _all_or_nothing(parts: Iterator[ClipBatch | DecodedVideo]) -> Generator[ClipBatch | DecodedVideo, None, bool]:
    """Yield ``parts`` (a fallback reader's); True when all came, False when it failed before the first.

    Raises:
        VideoError: it failed half-way, after its first parts were out, so its error stands.
    """
    out = 0
    try:
        for part in parts:
            out += 1
            yield part
    except VideoError:
        if out:
            raise
        return False
    return True

def stream_clips(
    path: str | os.PathLike,
    spec: ClipSpec,
    num_clips: Sampling,
    *,
    backend: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_threads: int = 0,
    max_bytes: int = MAX_BATCH_BYTES,
    decoder_resize: bool = True,
) -> Iterator[Union[ClipBatch, DecodedVideo]]:
    """Decode the clips of ``path`` a batch at a time, in time order.

    Yields zero or more :class:`ClipBatch` parts, then one :class:`DecodedVideo` holding the
    last batch (``streamed`` says how many clips came before it). Windows end inside the
    video (:func:`inside_video`).

    ``decoder_resize``: shrink frames inside the decoder (see :func:`decoder_size`); False
    resizes full-size frames with :func:`~vcl_infer.clips.preprocess.fit_frames` only.

    With ``backend="auto"``, a video of more than ``LONG_VIDEO_FRAMES`` frames sampled densely
    (``DENSE_FRACTION``, e.g. a clip a second) is read by PyAV in one sequential pass
    (:meth:`~vcl_infer.video.pyav_reader.PyAvReader.iter_groups`): decord's memory grows with
    the file it seeks in (``benchmarks/moment_memory.py``), and for clips a second apart a
    single pass is as fast as seeking; decord is kept when PyAV cannot read the file. A decord read whose first group had to patch undecodable frames,
    or decoded nothing, is redone with PyAV, which skips bad packets and usually recovers
    more frames (``decord/corrupted.mp4``: decord 11 of 50, PyAV 49); if PyAV fails too, the
    patched decord frames are used, or decord's error is raised. Damage found after the first
    group keeps decord's patched frames (counted in ``damaged_frames``): the earlier batches
    are already out.

    Raises:
        VideoError: the file cannot be read (the subclass says why).
    """
    shown = os.fspath(path)

    def with_pyav() -> Iterator[ClipBatch | DecodedVideo]:
        return stream_clips(shown, spec, num_clips, backend="pyav", max_pixels=max_pixels, num_threads=num_threads,
                            max_bytes=max_bytes, decoder_resize=decoder_resize)

    reader = open_video(shown, backend, max_pixels, num_threads=num_threads)
    if backend == "auto" and reader.info.backend == "decord" and _read_in_one_pass(reader, spec, num_clips):
        reader.close()  # its seek state is what grows with the file
        if (yield from _all_or_nothing(with_pyav())):
            return
        reader = open_video(shown, "decord", max_pixels, num_threads=num_threads)
    try:
        windows = inside_video(sample_windows(reader.timestamps, spec, num_clips), reader)
        parts = _decode_parts(reader, spec, windows, max_bytes, decoder_resize)
        try:
            pending, error = next(parts), None
        except VideoError as exc:
            pending, error = None, exc
        if backend == "auto" and reader.info.backend == "decord" and (error is not None or _damaged(reader)):
            if (yield from _all_or_nothing(with_pyav())):
                return
        if pending is None:
            raise error  # type: ignore[misc]
        sent = 0
        for part in parts:
            yield ClipBatch(shown, *pending)
            sent += len(pending[1])
            pending = part
        yield DecodedVideo(path=shown, info=reader.info, clips=pending[0], windows=list(pending[1]),
                           damaged_frames=_damaged(reader), streamed=sent)
    finally:
        reader.close()


def collect(parts: Iterator[Union[ClipBatch, DecodedVideo]]) -> DecodedVideo:
    """Join a stream of parts into one :class:`DecodedVideo` holding every clip."""
    clips: list[np.ndarray] = []
    windows: list[ClipWindow] = []
    for part in parts:
        clips.append(part.clips)
        windows.extend(part.windows)
        if isinstance(part, DecodedVideo):
            part.clips, part.windows, part.streamed = np.concatenate(clips), windows, 0
            return part
    raise RuntimeError("a clip stream ended without its final part")


def read_clips(
    path: str | os.PathLike,
    spec: ClipSpec,
    num_clips: Sampling,
    *,
    backend: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_threads: int = 0,
    decoder_resize: bool = True,
) -> DecodedVideo:
    """Decode the clips of ``path`` in this process: ``num_clips`` uniformly spaced ones, or
    as a :class:`ClipSampling` says (all of them in memory: for long videos use
    :func:`stream_clips`). Backend fallback and ``decoder_resize`` as in :func:`stream_clips`.

    Returns:
        A :class:`DecodedVideo`.

    Raises:
        VideoError: the file cannot be read (the subclass says why).
    """
    return collect(stream_clips(path, spec, num_clips, backend=backend, max_pixels=max_pixels,
                                num_threads=num_threads, decoder_resize=decoder_resize))
