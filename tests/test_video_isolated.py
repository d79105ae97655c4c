"""Decoding in child processes: every file gives clips or a typed error; hangs and crashes
of a worker become DecodeTimeout / DecoderCrashed and the pool goes on."""

import os
import signal
import time

import numpy as np
import pytest
from video_fixtures import make_video, shared_video, shared_videos

from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import DecoderCrashed, DecodeTimeout, FrameTooLarge, NotARegularFile, VideoError
from vcl_infer.video.isolated import DecodedVideo, DecodePool, DecodeRequest, decode_clips

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=64, crop_size=56)

# what each shared file must give: a backend name, or the VideoError subclass
EXPECTED = {
    "decord/corrupted.mp4": "pyav",
    "decord/flipping_a_pancake.mkv": "decord",
    "decord/unordered.mov": "decord",
    "decord/video_270.mov": "decord",
    "decord/video_90.mov": "decord",
    "mmaction2/demo.mp4": "decord",
    "mmaction2/test.avi": "decord",
    "moviepy/big_buck_bunny_432_433.webm": "decord",
    "moviepy/bitmap.mp4": "pyav",
    "moviepy/no_duration.webm": "pyav",
    "nwb-video-widgets/stub_h264.mp4": "decord",
    "nwb-video-widgets/stub_mjpeg.avi": "decord",
    "small/AudioVideoInterleave.avi": "CorruptVideo",
    "small/FlashVideo.flv": "UnsupportedFormat",
    "small/Mpeg4.mp4": "NoVideoStream",
    "small/WindowsMediaVideo.wmv": "CorruptVideo",
    "small/mp4-with-audio.mp4": "NoVideoStream",
    "small/webm.webm": "pyav",
    "torchcodec/av1_video.mkv": "decord",
    "torchcodec/h265_10bits.mp4": "decord",
    "torchcodec/var_fps_video.mp4": "decord",
}


@pytest.fixture(scope="module")
def pool():
    with DecodePool(workers=2, timeout_s=10) as p:
        yield p


@pytest.fixture(scope="module")
def strict_pool():
    """One worker, a short timeout and recycling after 2 files."""
    with DecodePool(workers=1, timeout_s=3, max_tasks_per_worker=2) as p:
        yield p


@pytest.fixture(scope="module")
def small_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "small.mp4"
    make_video(path, num_frames=10, width=64, height=48)
    return str(path)


def test_every_shared_video_gives_clips_or_a_typed_error(pool):
    names = shared_videos()
    if not names:
        pytest.skip("../shared/videos not found")
    paths = [shared_video(n) for n in names]
    started = time.monotonic()
    results = dict(zip(names, pool.imap((p, SPEC, 2) for p in paths)))
    for name, result in results.items():
        assert not isinstance(result, (DecodeTimeout, DecoderCrashed)), (name, result)
        if isinstance(result, VideoError):
            assert result.path.endswith(name)
            outcome = type(result).__name__
        else:
            assert isinstance(result, DecodedVideo)
            assert result.clips.shape == (2, 4, 56, 56, 3) and result.clips.dtype == np.uint8
            assert len(result.windows) == 2 and result.windows[0].start_sec <= result.windows[1].start_sec
            outcome = result.info.backend
        if name in EXPECTED:
            assert outcome == EXPECTED[name], name
    # the pool's 10 s timeout bounds each file; together they are far below that
    assert time.monotonic() - started < 10 * len(names)


def test_hanging_worker_times_out_and_pool_goes_on(strict_pool, small_mp4):
    requests = [
        DecodeRequest(small_mp4, SPEC, 1, test_fault="hang"),
        (small_mp4, SPEC, 1),
    ]
    started = time.monotonic()
    hung, after = list(strict_pool.imap(requests))
    assert isinstance(hung, DecodeTimeout) and hung.path == small_mp4
    assert "3 s" in hung.reason
    assert isinstance(after, DecodedVideo) and after.clips.shape == (1, 4, 56, 56, 3)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("fault, how", [("exit", "exit code 3"), ("kill", "signal 9"), ("abort", "signal 6")])
def test_dying_worker_gives_decoder_crashed_and_pool_recovers(strict_pool, small_mp4, fault, how):
    requests = [(small_mp4, SPEC, 1), DecodeRequest(small_mp4, SPEC, 1, test_fault=fault), (small_mp4, SPEC, 2)]
    first, crashed, last = list(strict_pool.imap(requests))
    assert isinstance(first, DecodedVideo) and isinstance(last, DecodedVideo)
    assert isinstance(crashed, DecoderCrashed) and how in crashed.reason and crashed.path == small_mp4


def test_workers_are_recycled_after_max_tasks(strict_pool, small_mp4):
    for result in strict_pool.imap([(small_mp4, SPEC, 1)] * 5):
        assert isinstance(result, DecodedVideo)  # results stay correct across recycling
    alive = [w.proc.pid for w in strict_pool._workers]
    for result in strict_pool.imap([(small_mp4, SPEC, 1)] * 2):
        assert isinstance(result, DecodedVideo)
    assert [w.proc.pid for w in strict_pool._workers] != alive


def test_unordered_imap_yields_indices(pool, small_mp4, tmp_path):
    missing = str(tmp_path / "missing.mp4")
    got = dict(pool.imap_unordered([(small_mp4, SPEC, 1), (missing, SPEC, 1), (small_mp4, SPEC, 3)]))
    assert sorted(got) == [0, 1, 2]
    assert isinstance(got[1], VideoError) and got[2].clips.shape[0] == 3


def test_fifo_and_frame_cap_through_the_pool(small_mp4, tmp_path):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    with DecodePool(workers=1, timeout_s=5, max_pixels=1000) as capped:
        started = time.monotonic()
        refused, too_large = list(capped.imap([(str(fifo), SPEC, 1), (small_mp4, SPEC, 1)]))
    assert isinstance(refused, NotARegularFile)
    assert isinstance(too_large, FrameTooLarge)
    assert time.monotonic() - started < 5


def test_decode_clips_one_off(small_mp4):
    decoded = decode_clips(small_mp4, SPEC, 2, timeout_s=20)
    assert decoded.clips.shape == (2, 4, 56, 56, 3)
    assert decoded.info.backend == "decord" and decoded.info.num_frames == 10
    with pytest.raises(VideoError):
        decode_clips(os.path.dirname(small_mp4), SPEC, 1)


def test_one_pool_runs_clip_decoding_and_other_reads_of_a_file(strict_pool, small_mp4):
    """Range queries and thumbnails use the build's workers: same timeout, crash handling and logs."""
    from vcl_infer.search.query import decode_range
    from vcl_infer.video.isolated import CallRequest

    requests = [
        CallRequest(small_mp4, "vcl_infer.search.query:decode_range", (small_mp4, SPEC, 2, 0.0, 0.2)),
        (small_mp4, SPEC, 1),
        CallRequest(small_mp4, "vcl_infer.search.query:decode_range", (small_mp4, SPEC, 1, 50.0, 60.0)),
        CallRequest(small_mp4, "os:getpid", test_fault="hang"),
        CallRequest(small_mp4, "os:getpid"),
    ]
    ranged, decoded, empty, hung, pid = list(strict_pool.imap(requests))
    clips, windows, duration = ranged
    expected_clips, expected_windows, expected_duration = decode_range(small_mp4, SPEC, 2, 0.0, 0.2)
    np.testing.assert_array_equal(clips, expected_clips)
    assert windows == expected_windows and duration == expected_duration
    assert isinstance(decoded, DecodedVideo)
    assert isinstance(empty, VideoError) and "no frame in 50-60 s" in empty.reason
    assert isinstance(hung, DecodeTimeout) and hung.path == small_mp4
    assert isinstance(pid, int) and pid != os.getpid()


def test_run_isolated_returns_the_value_or_raises_the_files_error(small_mp4, tmp_path):
    from vcl_infer.search.query import decode_range
    from vcl_infer.video.isolated import run_isolated

    clips, windows, _ = run_isolated(decode_range, (small_mp4, SPEC, 1, 0.0, 0.4), small_mp4, timeout_s=20)
    assert clips.shape == (1, 4, 56, 56, 3) and len(windows) == 1
    missing = str(tmp_path / "gone.mp4")
    with pytest.raises(VideoError) as raised:
        run_isolated(decode_range, (missing, SPEC, 1, 0.0, 1.0), missing, timeout_s=20)
    assert raised.value.path == missing


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux only")
def test_build_workers_keep_the_callers_priority_under_sched_batch():
    """Nice 10 starved the workers beside any other job (benchmarks/decode_priority.py)."""
    from vcl_infer.index.build import DECODE_PRIORITY
    from vcl_infer.video.isolated import CallRequest

    with DecodePool(workers=1, timeout_s=20, **DECODE_PRIORITY) as build_pool:
        (pid,) = list(build_pool.imap([CallRequest("-", "os:getpid")]))
        assert os.sched_getscheduler(pid) == os.SCHED_BATCH
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0)


def test_closing_a_pool_does_not_wait_for_workers_still_starting():
    """A build that finds nothing to decode closes its pool while the workers still import:
    they hold no task, so they are killed at once instead of being waited for (up to 2 s each)."""
    pool = DecodePool(workers=2, timeout_s=20)
    children = [w.proc for w in pool._workers]
    pool.close()
    assert [c.exitcode for c in children] == [-signal.SIGKILL] * 2


def test_a_worker_told_to_stop_exits_cleanly_at_once():
    """A ready worker leaves with exit code 0 when the pool closes (no kill needed)."""
    from vcl_infer.video.isolated import CallRequest

    pool = DecodePool(workers=1, timeout_s=20)
    assert list(pool.imap([CallRequest("-", "os:getpid")]))[0] > 0
    child = pool._workers[0].proc
    pool.close()
    assert child.exitcode == 0
