"""The decord and PyAV readers: content, timestamps, rotation, damage, and agreement."""

import numpy as np
import pytest
from video_fixtures import frame_colour, make_video, shared_video

from vcl_infer.clips.sampling import uniform_clips
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.video.clips import read_clips
from vcl_infer.video.open import open_video

BACKENDS = ["decord", "pyav"]


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A 12-frame 64x48 h264 video whose frame i has colour ``frame_colour(i)``."""
    path = tmp_path_factory.mktemp("vid") / "coded.mp4"
    frames = make_video(path, num_frames=12, width=64, height=48, fps=10)
    return str(path), frames


def _read_all(path, backend):
    reader = open_video(path, backend=backend)
    try:
        return reader.get_frames(range(reader.info.num_frames)), reader.timestamps, reader.info
    finally:
        reader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_generated_video_round_trips(coded, backend):
    path, original = coded
    frames, ts, info = _read_all(path, backend)
    assert info.backend == backend and info.num_frames == 12
    assert frames.shape == (12, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(ts, np.arange(12) / 10, atol=1e-3)
    # every frame is the one encoded at its position (bottom rows are flat colour)
    for i in range(12):
        assert np.abs(frames[i, 30:].astype(int) - frame_colour(i)).mean() < 6
    assert np.abs(frames.astype(int) - original).mean() < 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_indices_are_clamped(coded, backend):
    reader = open_video(coded[0], backend=backend)
    frames = reader.get_frames([-5, 0, 11, 500])
    np.testing.assert_array_equal(frames[0], frames[1])
    np.testing.assert_array_equal(frames[2], frames[3])
    reader.close()


def test_backends_agree_on_generated_video(coded):
    a, ta, _ = _read_all(coded[0], "decord")
    b, tb, _ = _read_all(coded[0], "pyav")
    np.testing.assert_allclose(ta, tb, atol=1e-3)
    assert np.abs(a.astype(int) - b).mean() < 1.0


def test_backends_agree_on_real_video():
    path = shared_video("mmaction2/demo.mp4")
    picks = [0, 57, 140, 279]
    out = {}
    for backend in BACKENDS:
        reader = open_video(path, backend=backend)
        assert reader.info.num_frames == 280
        out[backend] = (reader.get_frames(picks).astype(int), reader.timestamps)
        reader.close()
    assert np.abs(out["decord"][0] - out["pyav"][0]).mean() < 1.0
    np.testing.assert_allclose(out["decord"][1], out["pyav"][1], atol=1e-3)


@pytest.mark.parametrize("rel", ["torchcodec/av1_video.mkv", "moviepy/no_duration.webm"])
def test_pyav_reads_what_decord_0_6_could_not(rel):
    frames, ts, info = _read_all(shared_video(rel), "pyav")
    assert info.num_frames > 10 and frames.shape[0] == info.num_frames
    assert np.all(np.diff(ts) > 0)
    # real content (no_duration.webm is a dark VP9-with-alpha clip: max value 12)
    assert frames.std() > 1 and np.abs(np.diff(frames[::10].astype(int), axis=0)).mean() > 0


def test_10bit_hevc_comes_out_as_8bit_rgb():
    path = shared_video("torchcodec/h265_10bits.mp4")
    for backend in BACKENDS:
        frames, _, info = _read_all(path, backend)
        assert frames.dtype == np.uint8 and frames.shape == (30, 200, 200, 3)
        assert 10 < frames.mean() < 245


def test_corrupted_mp4_yields_its_decodable_frames():
    path = shared_video("decord/corrupted.mp4")
    frames, ts, info = _read_all(path, "pyav")
    assert info.claimed_frames == 50 and 28 <= info.num_frames <= 50
    assert frames.shape[0] == info.num_frames and np.all(np.diff(ts) > 0)
    # decord's batch read fails; the reader retries per frame and patches the rest
    reader = open_video(path, backend="decord")
    assert reader.get_frames(range(50)).shape == (50, 720, 1280, 3)
    assert reader.failed_frames > 0
    reader.close()
    # so auto mode redoes the file with PyAV and reports a clean read
    spec = ClipSpec(frames_per_clip=4, frame_step=4)
    decoded = read_clips(path, spec, 2)
    assert decoded.info.backend == "pyav" and decoded.damaged_frames == 0
    assert decoded.clips.shape == (2, 4, 112, 112, 3)


@pytest.mark.parametrize("rel", ["decord/video_90.mov", "decord/video_270.mov"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_gives_portrait_frames(rel, backend):
    frames, _, info = _read_all(shared_video(rel), backend)
    assert (info.height, info.width) == (568, 320)
    assert frames.shape == (3, 568, 320, 3)


@pytest.mark.parametrize("rel", ["decord/video_90.mov", "decord/video_270.mov"])
def test_rotation_matches_between_backends(rel):
    a, _, _ = _read_all(shared_video(rel), "decord")
    b, _, info = _read_all(shared_video(rel), "pyav")
    assert info.rotation in (90, 270)
    assert np.abs(a.astype(int) - b).mean() < 1.0  # same orientation, not mirrored or flipped


@pytest.mark.parametrize("backend", BACKENDS)
def test_unordered_pts_come_back_in_presentation_order(backend):
    frames, ts, info = _read_all(shared_video("decord/unordered.mov"), backend)
    assert info.num_frames == 4 and frames.shape[0] == 4
    assert np.all(np.diff(ts) >= 0)
    np.testing.assert_allclose(ts, np.arange(4) / 32, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_sampling_by_timestamp(backend):
    reader = open_video(shared_video("torchcodec/var_fps_video.mp4"), backend=backend)
    ts = reader.timestamps
    steps = np.diff(ts)
    assert steps.max() > 5 * steps.min()  # really variable (33 to 533 ms)
    spec = ClipSpec(frames_per_clip=8, frame_step=None, target_fps=4.0)
    span = 7 / 4.0
    starts = np.linspace(ts[0], max(ts[-1] - span, ts[0]), 5)  # uniform_clips' documented starts
    for start, window in zip(starts, uniform_clips(ts, spec, 5)):
        wanted = start + np.arange(8) / 4.0
        chosen = ts[window.indices]
        # the frame on screen at each wanted instant: starts at or before it, the next after it
        assert np.all(chosen <= wanted + 1e-6)
        following = np.append(ts, np.inf)[window.indices + 1]
        assert np.all(following > wanted - 1e-6)
        # index / average-fps sampling would pick other frames here: the VFR case matters
        naive = np.round(wanted * info_fps(ts)).astype(int)
        assert window.indices.tolist() != naive.tolist() or start == starts[0]
    assert reader.get_frames(window.indices).shape == (8, 128, 128, 3)
    reader.close()


def test_decord_garbage_avi_timestamps_fall_back_to_the_frame_rate():
    frames, ts, info = _read_all(shared_video("mmaction2/test.avi"), "decord")
    np.testing.assert_allclose(np.diff(ts), 1 / 25, atol=1e-6)
    assert ts[0] == 0 and frames.shape == (164, 240, 320, 3)


def info_fps(ts: np.ndarray) -> float:
    return (len(ts) - 1) / (ts[-1] - ts[0])
