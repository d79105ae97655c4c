"""Long videos are decoded a bounded group of frames at a time and streamed in parts."""

from __future__ import annotations

import numpy as np
from video_fixtures import make_video

from vcl_infer.clips.sampling import ClipSampling
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.video.reader import VideoInfo

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=40, crop_size=32)


class _CountingReader:
    """A fake reader over generated frames that records every request."""

    def __init__(self, num_frames: int, fps: float = 10.0, side: int = 48):
        self.info = VideoInfo(path="fake", backend="fake", num_frames=num_frames, fps=fps,
                              duration=num_frames / fps, width=side, height=side)
        self._ts = np.arange(num_frames) / fps
        self.requests: list[int] = []
        self.sizes: list = []

    @property
    def timestamps(self):
        return self._ts

    def get_frames(self, indices, size=None):
        idx = np.asarray(indices)
        self.requests.append(idx.size)
        self.sizes.append(size)
        height, width = size or (self.info.height, self.info.width)
        return np.repeat((idx % 251).astype(np.uint8)[:, None, None, None], height, 1).repeat(width, 2).repeat(3, 3)

    def close(self):
        pass


def test_frames_are_decoded_in_groups_within_the_byte_budget():
    from vcl_infer.video import clips as C

    reader = _CountingReader(num_frames=36_000)  # an hour at 10 fps
    windows = ClipSampling().windows(reader.timestamps, SPEC)
    budget = 200 * 48 * 48 * 3  # 200 frames
    seen = 0
    parts = 0
    for fitted, part in C._decode_parts(reader, SPEC, windows, budget, decoder_resize=False):
        assert len(part) <= C.PART_CLIPS and fitted.shape[0] == len(part)
        seen += len(part)
        parts += 1
    assert seen == len(windows) == 3600
    assert max(reader.requests) <= 200 and len(reader.requests) >= 3600 * 4 // 200
    assert parts >= 3600 // C.PART_CLIPS and set(reader.sizes) == {None}


def test_the_byte_budget_counts_frames_at_the_decoders_output_size():
    from vcl_infer.video import clips as C

    reader = _CountingReader(num_frames=3000)
    windows = ClipSampling().windows(reader.timestamps, SPEC)
    budget = 200 * 48 * 48 * 3  # 200 full-size frames = 288 frames scaled to 40 x 40 in the decoder
    clips = np.concatenate([fitted for fitted, _ in C._decode_parts(reader, SPEC, windows, budget)])
    assert set(reader.sizes) == {(40, 40)} and clips.shape[1:] == (4, 32, 32, 3)
    assert 200 < max(reader.requests) <= 288


def test_a_stream_equals_the_whole_read_and_comes_in_parts(tmp_path):
    from vcl_infer.video.clips import ClipBatch, DecodedVideo, read_clips, stream_clips

    path = tmp_path / "v.mp4"
    make_video(path, num_frames=300, fps=10)  # 30 s
    rule = ClipSampling(every_sec=0.25, min_clips=2)
    parts = list(stream_clips(path, SPEC, rule, max_bytes=20 * 64 * 48 * 3))  # 20 frames a group
    assert all(isinstance(p, ClipBatch) for p in parts[:-1]) and isinstance(parts[-1], DecodedVideo)
    assert len(parts) > 5 and parts[-1].streamed == sum(len(p.windows) for p in parts[:-1])
    whole = read_clips(path, SPEC, rule)
    assert np.array_equal(np.concatenate([p.clips for p in parts]), whole.clips)
    starts = [w.start_sec for p in parts for w in p.windows]
    assert starts == [w.start_sec for w in whole.windows] and starts == sorted(starts)


def test_the_pool_streams_parts_and_still_assembles_whole_videos(tmp_path):
    from vcl_infer.video.clips import ClipBatch, DecodedVideo
    from vcl_infer.video.isolated import DecodePool

    path = tmp_path / "v.mp4"
    make_video(path, num_frames=1200, fps=10)  # 2 minutes: 120 clips, two parts of 64
    rule = ClipSampling()
    with DecodePool(workers=1, timeout_s=60) as pool:
        streamed = list(pool.imap_unordered([(path, SPEC, rule)], parts=True))
        (whole,) = list(pool.imap([(path, SPEC, rule)]))
    kinds = [type(r) for _, r in streamed]
    assert kinds[:-1] == [ClipBatch] * (len(kinds) - 1) and kinds[-1] is DecodedVideo and len(kinds) >= 2
    assert isinstance(whole, DecodedVideo) and len(whole.windows) == whole.clips.shape[0]
    assert whole.clips.shape[0] == sum(r.clips.shape[0] for _, r in streamed)
