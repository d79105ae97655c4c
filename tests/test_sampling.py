import numpy as np
import pytest

from vcl_infer.clips.sampling import distinct_clips, random_clip, uniform_clips
from vcl_infer.clips.spec import ClipSpec


def constant_rate(n, fps=25.0):
    return np.arange(n) / fps


def test_uniform_clips_cover_the_video_from_first_to_last_frame():
    spec = ClipSpec(frames_per_clip=4, frame_step=2)
    clips = uniform_clips(constant_rate(100), spec, 5)
    assert len(clips) == 5
    assert clips[0].indices.tolist() == [0, 2, 4, 6]
    assert clips[-1].indices.tolist() == [93, 95, 97, 99]
    starts = [c.indices[0] for c in clips]
    assert starts == sorted(starts)
    assert clips[0].start_sec == 0.0
    assert clips[-1].end_sec == pytest.approx(100 / 25.0)


@pytest.mark.parametrize("rule,expected", [("clamp", [0, 2, 2, 2]), ("loop", [0, 2, 1, 0])])
def test_short_video_padding_rules(rule, expected):
    # 3 frames, a clip needs 4 frames at step 2 (span 7)
    spec = ClipSpec(frames_per_clip=4, frame_step=2, short_video=rule)
    clips = uniform_clips(constant_rate(3), spec, 2)
    for clip in clips:
        assert clip.indices.tolist() == expected


def test_time_based_sampling_picks_the_frame_on_screen_for_variable_frame_rate():
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.uniform(0.033, 0.533, size=300))
    ts -= ts[0]
    spec = ClipSpec(frames_per_clip=8, frame_step=None, target_fps=4.0)
    starts = np.linspace(0.0, ts[-1] - 7 / 4.0, 6)  # evenly spaced wanted clip starts
    for start, clip in zip(starts, uniform_clips(ts, spec, 6)):
        wanted = start + np.arange(8) / 4.0
        picked = ts[clip.indices]
        assert np.all(picked <= wanted + 1e-6)
        following = np.append(ts, np.inf)[clip.indices + 1]
        assert np.all(following > wanted)


def test_time_based_sampling_of_a_short_video_loops_when_asked():
    ts = constant_rate(5, fps=10)  # 0.5 s of video
    spec = ClipSpec(frames_per_clip=8, frame_step=None, target_fps=10.0, short_video="loop")
    (clip,) = uniform_clips(ts, spec, 1)
    assert clip.indices.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_random_clip_stays_inside_the_video():
    spec = ClipSpec(frames_per_clip=8, frame_step=3)
    rng = np.random.default_rng(1)
    for _ in range(200):
        idx = random_clip(constant_rate(50), spec, rng).indices
        assert idx.min() >= 0 and idx.max() <= 49 and np.all(np.diff(idx) == 3)


def test_distinct_clips_do_not_overlap_when_the_video_is_long_enough():
    spec = ClipSpec(frames_per_clip=8, frame_step=2)  # span 15
    rng = np.random.default_rng(2)
    for _ in range(100):
        clips = distinct_clips(constant_rate(64), spec, 4, rng)
        for a, b in zip(clips, clips[1:]):
            assert a.indices.max() < b.indices.min()


def test_distinct_clips_have_distinct_starts_in_order_on_a_short_video():
    spec = ClipSpec(frames_per_clip=8, frame_step=2)
    clips = distinct_clips(constant_rate(30), spec, 3, np.random.default_rng(3))
    starts = [c.indices[0] for c in clips]
    assert starts == sorted(starts) and len(set(starts)) == 3


def test_no_frames_is_an_error():
    with pytest.raises(ValueError):
        uniform_clips(np.array([]), ClipSpec(), 1)
