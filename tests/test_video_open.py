"""open_video: what is refused before any decoder runs, and which backend gets the rest."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from video_fixtures import ROOT, make_video, shared_video

from vcl_infer.errors import (
    FrameTooLarge,
    NotARegularFile,
    NoVideoStream,
    UnsupportedFormat,
    VideoError,
)
from vcl_infer.video.open import open_video


@pytest.fixture(scope="module")
def small_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "small.mp4"
    make_video(path, num_frames=8, width=64, height=48)
    return str(path)


def test_fifo_named_mp4_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(NotARegularFile, match="FIFO"):
        open_video(fifo)
    assert time.monotonic() - t0 < 1.0


def test_hls_playlist_named_mp4_is_refused(tmp_path):
    target = shared_video("mmaction2/demo.mp4")
    playlist = tmp_path / "x.mp4"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n")
    with pytest.raises(UnsupportedFormat, match="HLS"):
        open_video(playlist)


@pytest.mark.parametrize(
    "content",
    [b"", b"ffconcat version 1.0\nfile 'a.mp4'\n", b"v=0\no=- 0 0 IN IP4 127.0.0.1\n", b"hello " * 100],
    ids=["empty", "ffconcat", "sdp", "text"],
)
def test_empty_and_text_files_are_refused(tmp_path, content):
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(UnsupportedFormat):
        open_video(path)


def test_random_bytes_give_a_typed_error(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError):
        open_video(path)


def test_directory_and_dev_zero_symlink_are_refused(tmp_path):
    with pytest.raises(NotARegularFile, match="directory"):
        open_video(tmp_path)
    link = tmp_path / "zero.mp4"
    link.symlink_to("/dev/zero")
    with pytest.raises(NotARegularFile, match="device"):
        open_video(link)


def test_missing_file_is_a_video_error(tmp_path):
    with pytest.raises(VideoError, match="cannot stat"):
        open_video(tmp_path / "nope.mp4")


def test_frame_size_cap_is_enforced_from_headers(small_mp4):
    with pytest.raises(FrameTooLarge, match="64x48"):
        open_video(small_mp4, max_pixels=64 * 48 - 1)
    open_video(small_mp4, max_pixels=64 * 48).close()


def test_audio_only_file_has_no_video_stream():
    with pytest.raises(NoVideoStream):
        open_video(shared_video("small/mp4-with-audio.mp4"))


def test_unknown_backend_lists_valid_ones(small_mp4):
    with pytest.raises(ValueError, match="auto, decord, pyav"):
        open_video(small_mp4, backend="opencv")


@pytest.mark.parametrize(
    "rel, backend",
    [
        ("mmaction2/demo.mp4", "decord"),
        ("torchcodec/av1_video.mkv", "decord"),  # decord2 has dav1d; decord 0.6 did not
        ("moviepy/no_duration.webm", "pyav"),  # decord refuses files without a duration
        ("moviepy/bitmap.mp4", "pyav"),  # decord's 1x1 shape bug
        ("small/webm.webm", "pyav"),
    ],
)
def test_auto_backend_choice(rel, backend):
    reader = open_video(shared_video(rel))
    try:
        assert reader.info.backend == backend
        assert reader.info.stream_index >= 0
        frames = reader.get_frames([0, reader.info.num_frames - 1])
        assert frames.dtype == np.uint8 and frames.shape[1:] == (reader.info.height, reader.info.width, 3)
    finally:
        reader.close()


def test_importing_video_modules_loads_no_decoder():
    code = (
        "import sys, vcl_infer.video, vcl_infer.video.open, vcl_infer.video.isolated, vcl_infer.video.clips;"
        "bad = [m for m in ('decord', 'av', 'torch', 'onnxruntime') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
