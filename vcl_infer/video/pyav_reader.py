"""PyAV (FFmpeg 8.x) reader: the fallback for what decord cannot open or decode.

On open the whole stream is decoded once (no colour conversion) to learn the presentation
timestamps of the frames that actually decode: container metadata lies (no duration in
WebM, 50 frames claimed where 28 decode), and decode order differs from presentation order
(B-frames, ``unordered.mov``). :meth:`PyAvReader.get_frames` then decodes sequentially
from the start again, converting only the requested frames, so memory stays bounded by the
request, not the video; :meth:`PyAvReader.iter_groups` serves a sequence of requests (the
clip groups of a long video) from one such pass.
"""

from __future__ import annotations

from typing import Any, Generator, Iterator, Sequence

import numpy as np

from vcl_infer._optional import require
from vcl_infer.errors import CorruptVideo, FrameTooLarge, NoVideoStream, UnsupportedFormat
from vcl_infer.video._guards import FORMAT_WHITELIST
from vcl_infer.video.reader import FrameIndices, VideoInfo, report_progress
from vcl_infer.video.timeline import by_index, collapsed, last_frame_duration, nominal_rate

DEFAULT_MAX_PIXELS = 4096 * 4096
PROGRESS_EVERY = 256  # frames between progress reports on a long pass (see report_progress)


def open_container(path: str, shown: str | None = None) -> Any:
    """``av.open`` restricted to local files and whitelisted demuxers.

    ``protocol_whitelist=file`` stops a playlist from pulling in other URLs or files;
    ``format_whitelist`` stops FFmpeg probing the bytes as HLS, concat, SDP, image2, ...
    """
    av = require("av")
    av.logging.set_level(av.logging.PANIC)  # bad files would flood the log otherwise
    options = {"protocol_whitelist": "file", "format_whitelist": FORMAT_WHITELIST}
    try:
        return av.open(path, mode="r", options=options)
    except av.error.FFmpegError as exc:
        raise UnsupportedFormat(shown or path, f"FFmpeg cannot open it: {exc.strerror or exc}") from None


def video_stream(container: Any, shown: str) -> Any:
    """The stream FFmpeg ranks best (``av_find_best_stream``), which decord also picks."""
    if not container.streams.video:
        raise NoVideoStream(shown, "the file has no video stream")
    return container.streams.best("video")


class PyAvReader:
    """A video read through PyAV.

    Args:
        path: a regular file (checked by the caller, see :func:`vcl_infer.video.open_video`).
        max_pixels: frame size cap (width x height), checked on headers and decoded frames.
        num_threads: decoder threads; 0 lets FFmpeg choose.
    """

    backend = "pyav"

    def __init__(self, path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, num_threads: int = 0):
        self._path = str(path)
        self._max_pixels = max_pixels
        self._threads = num_threads
        container = open_container(self._path)
        try:
            stream = video_stream(container, self._path)
            self._stream_index = stream.index
            ctx = stream.codec_context
            self._check_size(ctx.width, ctx.height)
            codec, claimed = ctx.name, int(stream.frames or 0) or -1
            average_rate = float(stream.average_rate or 0.0)
            framerate = float(ctx.framerate or 0.0)  # the codec's own (H.264 VUI) rate
            guessed_rate = float(stream.guessed_rate or 0.0)
        finally:
            container.close()
        pts, rotation, size, last_duration = self._scan()
        if not pts:
            raise CorruptVideo(self._path, "no frame of the video stream could be decoded")
        raw = np.asarray(pts, dtype=np.float64)
        # decode position of the i-th frame in presentation order (stable: ties keep decode order)
        self._order = np.argsort(raw, kind="stable")
        self._timestamps = raw[self._order]
        rate = nominal_rate(framerate, guessed_rate, average_rate)
        self.collapsed_timestamps = collapsed(self._timestamps)
        if self.collapsed_timestamps:  # frame i is shown at i / nominal rate (see timeline.py)
            self._timestamps, duration = by_index(len(pts), rate)
        else:
            duration = float(self._timestamps[-1] - self._timestamps[0])
            duration += last_frame_duration(self._timestamps, last_duration, rate)
        self._rot_k = (rotation // 90) % 4  # np.rot90 turns rotation=-90 (a "90" tag) clockwise
        height, width = size if self._rot_k % 2 == 0 else size[::-1]
        n = len(pts)
        self.info = VideoInfo(
            path=self._path,
            backend=self.backend,
            num_frames=n,
            fps=n / duration if duration > 0 else average_rate,
            duration=duration,
            width=width,
            height=height,
            rotation=(-rotation) % 360,
            codec=codec,
            claimed_frames=claimed,
            stream_index=self._stream_index,
        )

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self._max_pixels:
            raise FrameTooLarge(
                self._path, f"frames are {width}x{height}, over the cap of {self._max_pixels} pixels"
            )

    def _frames(self) -> Generator[Any, None, None]:
        """Decoded frames in decode-output order; packets that fail to decode are skipped.

        Each pass opens the file afresh instead of seeking: seeking fails on some files
        (a damaged AVI index) and a fresh decoder has no state left from the last pass.
        Decoding packet by packet (not ``container.decode``) lets one corrupt packet be
        skipped instead of ending the stream.
        """
        av = require("av")
        container = open_container(self._path)
        try:
            stream = container.streams[self._stream_index]
            ctx = stream.codec_context
            ctx.thread_type = "AUTO"  # set before the codec opens on the first decode
            ctx.thread_count = self._threads
            for packet in container.demux(stream):
                try:
                    yield from ctx.decode(packet if packet.size else None)
                except av.error.FFmpegError:
                    continue
        finally:
            container.close()

    def _scan(self) -> tuple[list[float], int, tuple[int, int], float | None]:
        """Presentation times of every decodable frame, the rotation, the coded H x W, and how
        long the last frame (in presentation order) is shown (None when not declared)."""
        with open_container(self._path) as container:
            stream = container.streams[self._stream_index]
            time_base = float(stream.time_base) if stream.time_base else 0.0
            rate = float(stream.average_rate or stream.guessed_rate or 25)
        pts: list[float] = []
        rotation, size = 0, (0, 0)
        last_duration: float | None = None
        latest = -np.inf
        for count, frame in enumerate(self._frames()):
            if count % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                report_progress()
            if not pts:
                rotation, size = int(round(frame.rotation or 0)), (frame.height, frame.width)
            self._check_size(frame.width, frame.height)
            if frame.pts is not None and time_base:
                pts.append(frame.pts * time_base)
            else:  # no timestamp (some AVI/raw streams): continue at the nominal rate
                pts.append(pts[-1] + 1.0 / rate if pts else 0.0)
            if pts[-1] >= latest:
                latest = pts[-1]
                declared = getattr(frame, "duration", None)
                last_duration = declared * time_base if declared and time_base else None
        return pts, rotation, size, last_duration

    @property
    def timestamps(self) -> np.ndarray:
        """``(num_frames,)`` float64 seconds, presentation order, non-decreasing."""
        return self._timestamps

    def get_frames(self, indices: FrameIndices, size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames at ``indices`` (clamped to ``[0, num_frames)``).

        Args:
            indices: presentation-order frame indices.
            size: ``(height, width)`` (displayed orientation) to scale the frames to in
                FFmpeg's scaler (bilinear, area-aware when shrinking) during the colour
                conversion; None: full size.

        Returns:
            ``T x H x W x 3`` uint8 RGB, rotated as the container says it is displayed;
            high bit depth (10-bit HEVC) is converted to 8 bits.
        """
        return next(self.iter_groups([indices], size))

    def iter_groups(self, groups: Sequence[FrameIndices], size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """``get_frames(group, size)`` for each group in turn, from one decoding pass.

        Decoding is deterministic, so the frames are those of one ``get_frames`` call per
        group, but a long video is decoded once instead of once per group. A decoded frame is
        kept from when it is decoded until the last group that uses it is out: memory is the
        frames of about one group (plus those a later group shares with it), whatever the
        video's length.

        Raises:
            CorruptVideo: none of a group's frames decode.
        """
        shape = (self.info.height, self.info.width) if size is None else (int(size[0]), int(size[1]))
        wanted = [np.clip(np.asarray(g, dtype=np.int64).reshape(-1), 0, self.info.num_frames - 1) for g in groups]
        positions = [np.unique(self._order[idx]) for idx in wanted]  # decode positions, per group
        # the last group that uses each decode position (-1: none); 4 bytes a frame
        last_use = np.full(self.info.num_frames, -1, np.int32)
        for k, group in enumerate(positions):
            last_use[group] = k
        got: dict[int, np.ndarray] = {}
        decoding = self._frames()
        frames = enumerate(decoding)
        decoded = -1
        try:
            for k, idx in enumerate(wanted):
                if idx.size == 0:
                    yield np.zeros((0, *shape, 3), np.uint8)
                    continue
                last = int(positions[k][-1])
                while decoded < last:
                    step = next(frames, None)
                    if step is None:
                        break  # the stream ended early (a frame that decoded on the scan did not now)
                    decoded = step[0]
                    if decoded % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                        report_progress()
                    if decoded < last_use.size and last_use[decoded] >= k:
                        got[decoded] = self._to_rgb(step[1], shape)
                mine = [int(pos) for pos in positions[k]]
                yield self._assemble(idx, {pos: got[pos] for pos in mine if pos in got})
                for pos in mine:
                    if last_use[pos] == k:
                        got.pop(pos, None)
        finally:
            decoding.close()  # and with it the pass's container

    def _assemble(self, idx: np.ndarray, got: dict[int, np.ndarray]) -> np.ndarray:
        """The frames at presentation indices ``idx`` from ``got`` (decode position -> frame)."""
        if not got:
            raise CorruptVideo(self._path, "none of the requested frames decoded on the second pass")
        known = np.array(sorted(got))
        out = []
        for i in idx:
            pos = int(self._order[i])
            if pos not in got:  # decoding is deterministic, so this is rare: use the nearest frame
                pos = int(known[np.abs(known - pos).argmin()])
            out.append(got[pos])
        return np.stack(out)

    def _to_rgb(self, frame: Any, shape: tuple[int, int]) -> np.ndarray:
        if shape == (self.info.height, self.info.width):
            rgb = frame.to_ndarray(format="rgb24")  # swscale converts any bit depth to 8-bit RGB
        else:  # scale before rotating: the coded frame is (width, height) swapped for 90/270
            height, width = shape if self._rot_k % 2 == 0 else shape[::-1]
            rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()
        if self._rot_k:
            rgb = np.ascontiguousarray(np.rot90(rgb, self._rot_k))
        if rgb.shape[:2] != shape:
            # mid-stream size change: keep one shape per video (the first frame's) by padding/cropping
            canvas = np.zeros((*shape, 3), np.uint8)
            h, w = min(rgb.shape[0], shape[0]), min(rgb.shape[1], shape[1])
            canvas[:h, :w] = rgb[:h, :w]
            rgb = canvas
        return rgb

    def close(self) -> None:
        pass  # every pass closes its own container

    def __enter__(self) -> "PyAvReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
