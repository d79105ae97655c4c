"""Clip sampling at a stride in seconds: cap, floor, short videos, the recorded rule."""

from __future__ import annotations

import numpy as np
import pytest

from vcl_infer.clips.sampling import ClipSampling, sample_windows
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import VclError

STEP = ClipSpec(frames_per_clip=8, frame_step=4)  # 32 frames, about 1.07 s at 30 fps
TIMED = ClipSpec(frames_per_clip=8, frame_step=None, target_fps=8.0)  # 0.875 s spans


def seconds(duration: float, fps: float = 30.0) -> np.ndarray:
    return np.arange(int(round(duration * fps))) / fps


@pytest.mark.parametrize("spec", [STEP, TIMED], ids=["frame_step", "target_fps"])
def test_clips_start_every_stride_seconds_and_the_end_is_covered(spec):
    ts = seconds(60.0)
    windows = ClipSampling(every_sec=2.0, min_clips=1).windows(ts, spec)
    starts = np.array([w.start_sec for w in windows])
    # one clip every 2 s from 0, then one at the last valid start so the tail is in a clip
    assert np.allclose(starts[:-1], np.arange(len(starts) - 1) * 2.0, atol=1 / 30 + 1e-9)
    assert 29 <= len(windows) <= 31
    assert windows[-1].end_sec == pytest.approx(ts[-1] + 1 / 30, abs=0.15)
    assert np.all(np.diff(starts) > 0)


def test_the_clip_count_grows_with_the_length_unlike_a_fixed_count():
    rule = ClipSampling(every_sec=1.0, min_clips=4, max_clips=10_000)
    counts = [len(rule.windows(seconds(d), STEP)) for d in (30.0, 600.0)]
    assert counts[0] in range(29, 32) and counts[1] in range(599, 602)
    fixed = ClipSampling.fixed(8)
    assert [len(fixed.windows(seconds(d), STEP)) for d in (30.0, 600.0)] == [8, 8]


def test_the_cap_spreads_max_clips_evenly_over_a_long_video():
    ts = seconds(3600.0, fps=10.0)
    windows = ClipSampling(every_sec=1.0, min_clips=8, max_clips=600).windows(ts, STEP)
    assert len(windows) == 600
    gaps = np.diff([w.start_sec for w in windows])
    assert gaps.min() > 5.5 and gaps.max() < 6.5  # 3600 s / 600 clips: a 6 s stride
    assert windows[0].start_sec == 0.0 and windows[-1].end_sec == pytest.approx(3600.0, abs=0.01)


@pytest.mark.parametrize("duration", [0.3, 2.0, 5.0])
def test_short_videos_get_the_floor_of_evenly_spaced_clips(duration):
    ts = seconds(duration)
    windows = ClipSampling(every_sec=1.0, min_clips=8).windows(ts, STEP)
    assert len(windows) == 8
    assert all(0 <= w.indices.min() and w.indices.max() < ts.size for w in windows)
    assert windows[0].start_sec == 0.0


def test_a_video_shorter_than_one_clip_still_gets_clips():
    ts = seconds(0.1)  # 3 frames, a clip spans 29
    windows = ClipSampling(every_sec=1.0, min_clips=2).windows(ts, STEP)
    assert len(windows) == 2 and all(w.indices.max() == 2 for w in windows)


def test_an_int_is_a_fixed_count():
    assert len(sample_windows(seconds(100.0), STEP, 3)) == 3


@pytest.mark.parametrize("kwargs", [dict(every_sec=0.0), dict(every_sec=float("nan")), dict(min_clips=0),
                                    dict(min_clips=10, max_clips=5), dict(count=0)])
def test_invalid_rules_are_refused(kwargs):
    with pytest.raises(ValueError):
        ClipSampling(**kwargs)


def test_the_rule_round_trips_and_an_index_keeps_it(tmp_path):
    from vcl_infer.clips.sampling_record import (
        read_sampling,
        requested_sampling,
        resolve_sampling,
        write_sampling,
    )

    rule = ClipSampling(every_sec=0.5, min_clips=3, max_clips=99)
    assert ClipSampling.from_dict(rule.to_dict()) == rule
    assert ClipSampling.from_dict(ClipSampling.fixed(5).to_dict()) == ClipSampling.fixed(5)
    assert resolve_sampling(tmp_path, None) == ClipSampling()  # a new folder: the default
    write_sampling(tmp_path, rule)
    assert read_sampling(tmp_path) == rule
    assert resolve_sampling(tmp_path, None) == rule  # `add` without options: the index's rule
    assert resolve_sampling(tmp_path, requested_sampling(None, 0.5, 3, 99)) == rule
    with pytest.raises(VclError, match="was built with a clip every 0.5 s"):
        resolve_sampling(tmp_path, requested_sampling(None, 2.0, None, None))
    with pytest.raises(VclError, match="cannot be combined"):
        requested_sampling(4, 1.0, None, None)


def test_an_index_from_before_the_record_keeps_its_fixed_count(tmp_path):
    from vcl_infer.clips.sampling_record import read_sampling

    (tmp_path / "catalog.sqlite").write_bytes(b"")
    (tmp_path / "build_report.json").write_text('{"clips_per_video": 3}')
    assert read_sampling(tmp_path) == ClipSampling.fixed(3)


@pytest.mark.slow
def test_cli_builds_at_a_stride_records_it_and_refuses_another_rule_for_add(tmp_path):
    import json

    from click.testing import CliRunner
    from video_fixtures import make_video

    from vcl_infer.cli.index import main
    from vcl_infer.index import VideoIndex

    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", num_frames=200, fps=10)  # 20 s
    index = tmp_path / "index"
    runner = CliRunner()
    out = runner.invoke(main, ["build", str(videos), "--index", str(index), "--clip-every", "2", "--min-clips", "3",
                               "--workers", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["sampling"] == {"every_sec": 2.0, "min_clips": 3, "max_clips": 3600}
    assert json.loads((index / "sampling.json").read_text())["every_sec"] == 2.0
    with VideoIndex.open(index) as ix:
        assert ix.video(ix.video_id(str(videos / "a.mp4"))).num_clips in (9, 10)
    bad = runner.invoke(main, ["add", str(videos / "a.mp4"), "--index", str(index), "--clip-every", "5"])
    assert bad.exit_code != 0 and "was built with a clip every 2 s" in bad.output
    both = runner.invoke(main, ["build", str(videos), "--index", str(tmp_path / "i2"), "--clips", "3",
                                "--clip-every", "1"])
    assert both.exit_code != 0 and "cannot be combined" in both.output
