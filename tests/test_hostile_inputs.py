"""Hostile single inputs: links that cannot be followed, non-regular queries, timelines that lie."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from video_fixtures import make_video

from vcl_infer.errors import VclError
from vcl_infer.spec import ClipSpec

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

    from vcl_infer.build import build_index

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
    from vcl_infer.search import Query, query_clips

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
    from vcl_infer.search import Query, query_clips

    with pytest.raises(VclError, match="not found"):
        query_clips(Query(str(tmp_path / "nope.mp4")), SPEC, 1)
