"""Long videos: PyAV serves every clip group from one decoding pass, and ``backend="auto"``
streams densely sampled videos over ``LONG_VIDEO_FRAMES`` frames with it (decord's memory
grows with the file it seeks in), giving decord's clips within the backends' stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from video_fixtures import VIDEOS, make_video

from vcl_infer.clips.sampling import ClipSampling
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=40, crop_size=32)


@pytest.mark.parametrize("rel", ["decord/unordered.mov", "mmaction2/test.avi"])
def test_groups_from_one_pass_equal_one_request_per_group(rel, monkeypatch):
    from vcl_infer.video.pyav_reader import PyAvReader

    path = VIDEOS / rel
    if not path.is_file():
        pytest.skip("shared video missing")
    reader = PyAvReader(str(path))
    n = reader.info.num_frames
    rng = np.random.default_rng(0)
    # overlapping, unsorted, repeated and out-of-range indices, and an empty group
    groups = [np.arange(0, n // 3), np.arange(n // 4, n // 2)[::-1], np.array([], np.int64),
              rng.integers(-3, n + 3, 40), np.array([n - 1, n - 1, 0])]
    expected = [reader.get_frames(g) for g in groups]
    passes = []
    original = PyAvReader._frames

    def counted(self):
        passes.append(1)
        yield from original(self)

    monkeypatch.setattr(PyAvReader, "_frames", counted)
    got = list(reader.iter_groups(groups))
    assert len(passes) == 1
    assert len(got) == len(groups) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_a_long_video_is_streamed_by_pyav_within_the_backends_tolerance(tmp_path, monkeypatch):
    from vcl_infer.video import clips as C

    path = tmp_path / "long.mp4"
    make_video(path, num_frames=400, width=64, height=48, fps=10)
    rule = ClipSampling(every_sec=0.5, min_clips=2)
    assert C.collect(C.stream_clips(path, SPEC, rule)).info.backend == "decord"  # 400 frames: not long
    for decoder_resize, tolerance in [(False, 1.0), (True, 3.0)]:
        # the backends' colour conversion (test_video_readers: mean < 1 grey level); with PyAV's
        # in-decoder scaling also the decoder-resize tolerance (test_decoder_resize: mean <= 3)
        monkeypatch.setattr(C, "LONG_VIDEO_FRAMES", 10**9)
        decord = C.collect(C.stream_clips(path, SPEC, rule, decoder_resize=decoder_resize))
        monkeypatch.setattr(C, "LONG_VIDEO_FRAMES", 300)
        parts = list(C.stream_clips(path, SPEC, rule, decoder_resize=decoder_resize))
        assert decord.info.backend == "decord" and parts[-1].info.backend == "pyav" and len(parts) > 2
        clips = np.concatenate([p.clips for p in parts])
        assert [w.start_sec for p in parts for w in p.windows] == pytest.approx([w.start_sec for w in decord.windows])
        assert clips.shape == decord.clips.shape
        assert np.abs(clips.astype(int) - decord.clips).mean() < tolerance
    # a few clips of a long video are left to decord's seeking (it decodes a small part of the file)
    assert C.collect(C.stream_clips(path, SPEC, 3)).info.backend == "decord"


def test_pyav_reports_progress_on_its_long_passes(tmp_path):
    from vcl_infer.video import reader as R
    from vcl_infer.video.pyav_reader import PROGRESS_EVERY, PyAvReader

    path = tmp_path / "v.mp4"
    make_video(path, num_frames=3 * PROGRESS_EVERY, width=32, height=32)
    calls = []
    R.set_progress_hook(lambda: calls.append(1))
    try:
        reader = PyAvReader(str(path))  # the scan decodes every frame
        assert len(calls) == 3
        list(reader.iter_groups([np.arange(0, 100), np.arange(3 * PROGRESS_EVERY - 10, 3 * PROGRESS_EVERY)]))
        assert len(calls) == 6
    finally:
        R.set_progress_hook(None)


def slow_but_advancing(steps: int, pause: float) -> int:
    """A read that takes ``steps * pause`` seconds, reporting progress after each step."""
    import time

    from vcl_infer.video.reader import report_progress

    for _ in range(steps):
        time.sleep(pause)
        report_progress()
    return steps


def slow_and_silent(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return 0


def test_a_worker_that_reports_progress_outlives_the_time_limit_and_a_silent_one_does_not(tmp_path):
    from vcl_infer.errors import DecodeTimeout
    from vcl_infer.video.isolated import run_isolated

    path = tmp_path / "any.mp4"
    assert run_isolated(slow_but_advancing, (8, 0.6), path, timeout_s=2.5) == 8  # 4.8 s in all
    with pytest.raises(DecodeTimeout):
        run_isolated(slow_and_silent, (4.8,), path, timeout_s=2.5)
