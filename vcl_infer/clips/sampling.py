"""Which frames make which clip: computed from timestamps alone, without decoding.

A video is described by the presentation timestamps of its decodable frames (seconds, in
presentation order). Index-based specs (``frame_step``) take every n-th frame; time-based
specs (``target_fps``) take, for each wanted instant, the frame on screen at that instant,
which stays right for variable-frame-rate video where ``index / fps`` drifts.

Short videos: when a video holds fewer frames than one clip spans, it still yields clips.
``ClipSpec.short_video`` picks the padding rule: ``clamp`` repeats the last frame,
``loop`` wraps around to the first frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcl_infer.clips.spec import ClipSpec


@dataclass(frozen=True)
class ClipWindow:
    """One clip: frame indices into the video's presentation-order frames, and its time range.

    Attributes:
        indices: ``(T,)`` int64 frame indices, each in ``[0, num_frames)``.
        start_sec: presentation time of the clip's first frame.
        end_sec: time at which the clip's last frame stops being shown.
    """

    indices: np.ndarray
    start_sec: float
    end_sec: float


def _as_timestamps(timestamps: np.ndarray) -> np.ndarray:
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if ts.size == 0:
        raise ValueError("a video with no decodable frames has no clips")
    if not np.all(np.isfinite(ts)):
        raise ValueError("timestamps must be finite")
    # Decoders hand frames over in presentation order; keep a non-decreasing timeline even
    # where a container's timestamps are not (a repeated pts must not move time backwards).
    return np.maximum.accumulate(ts)


def _frame_duration(ts: np.ndarray) -> float:
    steps = np.diff(ts)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 0.0


def _window(ts: np.ndarray, indices: np.ndarray) -> ClipWindow:
    indices = indices.astype(np.int64)
    last = int(indices.max())
    end = ts[last + 1] if last + 1 < ts.size else ts[last] + _frame_duration(ts)
    return ClipWindow(indices=indices, start_sec=float(ts[indices[0]]), end_sec=float(end))


def _pad(indices: np.ndarray, num_frames: int, rule: str) -> np.ndarray:
    if rule == "loop":
        return indices % num_frames
    return np.minimum(indices, num_frames - 1)


def _step(spec: ClipSpec) -> int:
    """The frame step of an index-based spec (the spec's checks make exactly one of step and fps set)."""
    if spec.frame_step is None:
        raise ValueError("this spec samples by time (target_fps), not by frame step")
    return int(spec.frame_step)


def _fps(spec: ClipSpec) -> float:
    """The sampling rate of a time-based spec."""
    if spec.target_fps is None:
        raise ValueError("this spec samples by frame step, not by time (target_fps)")
    return float(spec.target_fps)


def _indices_by_step(ts: np.ndarray, spec: ClipSpec, start: int) -> np.ndarray:
    offsets = np.arange(spec.frames_per_clip, dtype=np.int64) * _step(spec)
    return _pad(start + offsets, ts.size, spec.short_video)


def _indices_by_time(ts: np.ndarray, spec: ClipSpec, start_sec: float) -> np.ndarray:
    wanted = start_sec + np.arange(spec.frames_per_clip) / _fps(spec)
    length = ts[-1] - ts[0] + _frame_duration(ts)
    if spec.short_video == "loop" and length > 0:
        wanted = ts[0] + np.mod(wanted - ts[0], length)
    # the frame on screen at time t is the last one whose pts <= t
    found = np.searchsorted(ts, wanted + 1e-9, side="right") - 1
    return np.clip(found, 0, ts.size - 1)


def _start_range(ts: np.ndarray, spec: ClipSpec) -> tuple[float, float]:
    """First and last valid clip start: frame indices, or seconds for time-based specs."""
    if spec.target_fps is None:
        span = (spec.frames_per_clip - 1) * _step(spec) + 1
        return 0.0, float(max(ts.size - span, 0))
    span_sec = (spec.frames_per_clip - 1) / _fps(spec)
    return float(ts[0]), float(max(ts[-1] - span_sec, ts[0]))


def _clip_at(ts: np.ndarray, spec: ClipSpec, start: float) -> ClipWindow:
    if spec.target_fps is None:
        return _window(ts, _indices_by_step(ts, spec, int(round(start))))
    return _window(ts, _indices_by_time(ts, spec, start))


def uniform_clips(timestamps: np.ndarray, spec: ClipSpec, num_clips: int) -> list[ClipWindow]:
    """``num_clips`` clips with evenly spaced starts from the first to the last valid start.

    The evaluation and indexing sampler: deterministic, covers the whole video.
    """
    if num_clips < 1:
        raise ValueError("num_clips must be >= 1")
    ts = _as_timestamps(timestamps)
    first, last = _start_range(ts, spec)
    starts = np.linspace(first, last, num_clips) if num_clips > 1 else [(first + last) / 2]
    return [_clip_at(ts, spec, s) for s in starts]


def random_clip(timestamps: np.ndarray, spec: ClipSpec, rng: np.random.Generator) -> ClipWindow:
    """One clip with a uniformly random start (training)."""
    ts = _as_timestamps(timestamps)
    first, last = _start_range(ts, spec)
    if spec.target_fps is None:
        return _clip_at(ts, spec, float(rng.integers(int(first), int(last) + 1)))
    return _clip_at(ts, spec, float(rng.uniform(first, last)))


def distinct_clips(
    timestamps: np.ndarray, spec: ClipSpec, num_clips: int, rng: np.random.Generator
) -> list[ClipWindow]:
    """``num_clips`` temporally distinct clips in time order (training views).

    The valid start range is cut into ``num_clips`` equal segments and one start is drawn
    in each, so clips never share a start and do not overlap when the video is long enough
    (``num_clips`` clip spans or more).
    """
    if num_clips < 1:
        raise ValueError("num_clips must be >= 1")
    ts = _as_timestamps(timestamps)
    first, last = _start_range(ts, spec)
    if spec.target_fps is None:
        span = (spec.frames_per_clip - 1) * _step(spec) + 1
        if ts.size >= num_clips * span:
            # non-overlapping: place clips in order with random gaps that add up to the slack
            slack = ts.size - num_clips * span
            cuts = np.sort(rng.integers(0, slack + 1, size=num_clips))
            starts = cuts + np.arange(num_clips) * span
            return [_clip_at(ts, spec, float(s)) for s in starts]
    edges = np.linspace(first, last, num_clips + 1)
    drawn = [rng.uniform(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
    return [_clip_at(ts, spec, float(s)) for s in drawn]


DEFAULT_CLIP_EVERY = 1.0
DEFAULT_MIN_CLIPS = 8
DEFAULT_MAX_CLIPS = 3600


@dataclass(frozen=True)
class ClipSampling:
    """How many clips a video gets, and where: a stride in seconds, or a fixed count.

    With ``every_sec`` (the default for builds) a clip starts every ``every_sec`` seconds
    from the first frame, plus one at the last valid start so the end is covered; a video
    too short for ``min_clips`` such clips gets ``min_clips`` evenly spaced (overlapping)
    ones, and a video long enough for more than ``max_clips`` gets ``max_clips`` evenly
    spaced ones (its stride grows to ``duration / max_clips``). With ``count`` every video
    gets exactly ``count`` evenly spaced clips, whatever its length (``--clips N``).

    Attributes:
        every_sec: stride between clip starts in seconds (ignored when ``count`` is set).
        min_clips: floor for short videos.
        max_clips: cap for long videos (bounds the index size per video).
        count: a fixed number of clips per video instead of a stride.
    """

    every_sec: float = DEFAULT_CLIP_EVERY
    min_clips: int = DEFAULT_MIN_CLIPS
    max_clips: int = DEFAULT_MAX_CLIPS
    count: int | None = None

    def __post_init__(self) -> None:
        if self.count is not None:
            if int(self.count) < 1:
                raise ValueError("the clip count must be at least 1")
            return
        if not (np.isfinite(self.every_sec) and self.every_sec > 0):
            raise ValueError(f"the clip stride must be a positive number of seconds, got {self.every_sec}")
        if self.min_clips < 1 or self.max_clips < self.min_clips:
            raise ValueError(f"need 1 <= min_clips <= max_clips, got {self.min_clips} and {self.max_clips}")

    @classmethod
    def fixed(cls, count: int) -> "ClipSampling":
        """Exactly ``count`` evenly spaced clips per video."""
        return cls(count=int(count))

    def describe(self) -> str:
        """One line for reports and ``--help``: ``every 1 s (8..3600 clips)`` or ``8 clips``."""
        if self.count is not None:
            return f"{self.count} clips per video"
        return f"a clip every {self.every_sec:g} s ({self.min_clips} to {self.max_clips} clips per video)"

    def to_dict(self) -> dict:
        """The JSON form recorded with an index (``sampling.json``)."""
        if self.count is not None:
            return {"count": int(self.count)}
        return {"every_sec": float(self.every_sec), "min_clips": int(self.min_clips),
                "max_clips": int(self.max_clips)}

    @classmethod
    def from_dict(cls, data: dict) -> "ClipSampling":
        """Inverse of :meth:`to_dict`; raises ``ValueError`` for a malformed record."""
        if not isinstance(data, dict):
            raise ValueError("a sampling record must be a JSON object")
        if data.get("count") is not None:
            return cls.fixed(int(data["count"]))
        return cls(every_sec=float(data.get("every_sec", DEFAULT_CLIP_EVERY)),
                   min_clips=int(data.get("min_clips", DEFAULT_MIN_CLIPS)),
                   max_clips=int(data.get("max_clips", DEFAULT_MAX_CLIPS)))

    def windows(self, timestamps: np.ndarray, spec: ClipSpec) -> list[ClipWindow]:
        """The clip windows of a video with these frame ``timestamps`` (seconds)."""
        if self.count is not None:
            return uniform_clips(timestamps, spec, int(self.count))
        ts = _as_timestamps(timestamps)
        starts = _stride_starts(ts, spec, float(self.every_sec))
        if len(starts) < self.min_clips:
            return uniform_clips(ts, spec, self.min_clips)
        if len(starts) > self.max_clips:
            return uniform_clips(ts, spec, self.max_clips)
        return [_clip_at(ts, spec, s) for s in starts]


def _stride_starts(ts: np.ndarray, spec: ClipSpec, every_sec: float) -> list[float]:
    """Clip starts every ``every_sec`` seconds from the first valid start, plus the last valid
    start when the stride leaves more than a quarter stride of the end uncovered. Frame
    indices for step-based specs (the frame on screen at each instant), seconds otherwise."""
    first, last = _start_range(ts, spec)
    if spec.target_fps is None:
        t0, t1 = float(ts[int(first)]), float(ts[int(last)])
    else:
        t0, t1 = first, last
    times = list(t0 + every_sec * np.arange(int(np.floor((t1 - t0) / every_sec + 1e-9)) + 1))
    if t1 - times[-1] > 0.25 * every_sec:
        times.append(t1)
    if spec.target_fps is not None:
        return [float(t) for t in times]
    found = np.searchsorted(ts, np.asarray(times) + 1e-9, side="right") - 1
    found = np.clip(found, int(first), int(last))
    return [float(i) for i in np.unique(found)]


def sample_windows(timestamps: np.ndarray, spec: ClipSpec, how: "int | ClipSampling") -> list[ClipWindow]:
    """Clip windows by a fixed count (an int: :func:`uniform_clips`) or a :class:`ClipSampling`."""
    if isinstance(how, ClipSampling):
        return how.windows(timestamps, spec)
    return uniform_clips(timestamps, spec, int(how))
