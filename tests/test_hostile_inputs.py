"""Hostile single inputs: links that cannot be followed, non-regular queries, timelines that lie."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from video_fixtures import make_video

from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import VclError

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=40, crop_size=32)


def _links(folder: Path) -> dict[str, Path]:
    """A dangling link and a two-link loop (``a.mp4 -> b.mp4 -> a.mp4``) in ``folder``."""
    made = {"dangling": folder / "dangling.mp4", "loop_a": folder / "a.mp4", "loop_b": folder / "b.mp4"}
    os.symlink(folder / "missing.mp4", made["dangling"])
    os.symlink(folder / "b.mp4", made["loop_a"])
    os.symlink(folder / "a.mp4", made["loop_b"])
    return made


@pytest.mark.slow
def test_dangling_links_and_loops_are_build_failures_with_reasons(tmp_path):
    from test_build_corpus import bundle

    from vcl_infer.index.build import build_index

    model = bundle()
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "good.mp4", num_frames=12)
    links = _links(videos)
    report = build_index(videos, tmp_path / "index", model=model, clips=1, workers=1, progress=False)
    assert report.added == 1
    failed = {Path(f.path).name: f for f in report.failed}
    assert set(failed) == {"dangling.mp4", "a.mp4", "b.mp4"}
    assert "dangling symbolic link" in failed["dangling.mp4"].reason
    assert str(links["dangling"].parent / "missing.mp4") in failed["dangling.mp4"].reason
    assert "loop" in failed["a.mp4"].reason and "loop" in failed["b.mp4"].reason
    # a re-run knows them (unchanged failures are skipped like any other known failure)
    again = build_index(videos, tmp_path / "index", model=model, clips=1, workers=1, progress=False)
    assert again.skipped == 4 and again.removed == 0 and not again.failed


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "dangling", "loop"])
def test_a_non_regular_query_says_what_it_is(tmp_path, kind):
    from vcl_infer.search.query import Query, query_clips

    if kind == "fifo":
        path, expected = tmp_path / "q.mp4", "a FIFO"
        os.mkfifo(path)
    elif kind == "dev_zero":
        path, expected = tmp_path / "q.mp4", "a device"
        os.symlink("/dev/zero", path)
    else:
        links = _links(tmp_path)
        path, expected = (links["dangling"], "dangling") if kind == "dangling" else (links["loop_a"], "loop")
    with pytest.raises(VclError) as caught:
        query_clips(Query(str(path)), SPEC, 1, timeout_s=20)
    message = str(caught.value)
    assert expected in message and "not found" not in message, message


def test_a_missing_query_still_says_not_found(tmp_path):
    from vcl_infer.search.query import Query, query_clips

    with pytest.raises(VclError, match="not found"):
        query_clips(Query(str(tmp_path / "nope.mp4")), SPEC, 1)


# ---------------------------------------------------------------- timelines that lie


def vfr_video(path: Path, seconds: tuple[float, ...] = (0.0, 3600.0, 36000.0)) -> None:
    """Three frames shown at 0 s, 1 h and 10 h (variable frame rate taken to the extreme)."""
    import fractions

    import av

    time_base = fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        stream.codec_context.time_base = stream.time_base = time_base
        for i, t in enumerate(seconds):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 60 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def collapsed_video(path: Path, num_frames: int = 251, squeeze: int = 250) -> None:
    """A 25 fps clip (``num_frames / 25`` s) remuxed with every pts divided by ``squeeze``:
    251 frames stamped within 40 ms, as a careless re-encode writes them."""
    import io

    import av

    encoded = io.BytesIO()
    with av.open(encoded, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        rng = np.random.default_rng(7)
        for i in range(num_frames):
            rgb = np.full((64, 96, 3), (i * 7) % 256, np.uint8)
            rgb[:16, (3 * i) % 80 : (3 * i) % 80 + 16] = rng.integers(0, 255, 3, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    encoded.seek(0)
    with av.open(encoded) as source, av.open(str(path), "w") as target:
        src = source.streams.video[0]
        dst = target.add_stream_from_template(src)
        for packet in source.demux(src):
            if not packet.size:
                continue
            packet.stream, packet.time_base = dst, src.time_base
            packet.pts, packet.dts = int(packet.pts) // squeeze, None
            target.mux(packet)


@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_clip_windows_of_a_vfr_video_stay_inside_it(tmp_path, backend):
    from vcl_infer.video.clips import read_clips

    path = tmp_path / "vfr.mp4"
    vfr_video(path)
    video = read_clips(path, SPEC, 4, backend=backend)
    last_frame = float(video.info.duration)
    assert np.isclose(video.windows[-1].start_sec, 36000.0, atol=1) or video.windows[0].start_sec == 0.0
    for w in video.windows:
        assert 0.0 <= w.start_sec <= w.end_sec <= 36000.0 + 1.0, (w.start_sec, w.end_sec)
    assert last_frame < 36001.0


def test_collapsed_timestamps_are_read_with_pyav_and_timed_by_frame_index(tmp_path):
    import time

    from vcl_infer.video.clips import read_clips

    path = tmp_path / "collapsed.mp4"
    collapsed_video(path)
    t0 = time.monotonic()
    video = read_clips(path, SPEC, 8)
    assert time.monotonic() - t0 < 10
    assert video.info.backend == "pyav" and video.info.num_frames == 251
    assert video.info.duration == pytest.approx(251 / 25)
    starts = [w.start_sec for w in video.windows]
    assert starts[0] == 0.0 and starts[-1] > 9.0 and np.all(np.diff(starts) > 1.0)
    assert video.windows[-1].end_sec <= video.info.duration + 1e-9
