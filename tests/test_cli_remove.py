"""`vcl-index remove`: every file not removed is named with why; nothing removed exits 1."""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from pathlib import Path

import pytest
from test_build_corpus import run_cli, workdir
from video_fixtures import make_video


@lru_cache(maxsize=None)
def _folder() -> Path:
    folder = workdir() / "remove-videos"
    folder.mkdir()
    for name in ("one.mp4", "two.mp4", "three.mp4"):
        make_video(folder / name, num_frames=10)
    return folder


def _fresh_index(tmp_path: Path) -> Path:
    """A copy of one small index over :func:`_folder` (built once, copied per test)."""
    from test_build_corpus import bundle

    built = workdir() / "remove-index"
    if not built.exists():
        from vcl_infer.index.build import build_index

        build_index(_folder(), built, model=bundle(), clips=1, workers=1, progress=False)
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


@pytest.mark.slow
def test_removing_only_unknown_files_names_each_and_exits_1(tmp_path):
    index = _fresh_index(tmp_path)
    stray = tmp_path / "stray.mp4"
    make_video(stray, num_frames=4)
    missing = tmp_path / "missing.mp4"
    proc = run_cli("vcl-index", "remove", str(stray), str(missing), "--index", str(index), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "removed 0 of 2" in proc.stdout
    lines = {line.split(":")[0].split()[-1]: line for line in proc.stderr.splitlines() if "not removed" in line}
    assert "never built or added" in lines[str(stray)]
    assert "no such file on disk" in lines[str(missing)]
    assert "nothing was removed" in proc.stderr
    ok = run_cli("vcl-index", "remove", str(missing), "--index", str(index), "--missing-ok", check=False)
    assert ok.returncode == 0


@pytest.mark.slow
def test_another_spelling_of_an_indexed_path_is_named(tmp_path):
    index = _fresh_index(tmp_path)
    link_dir = tmp_path / "linked"
    os.symlink(_folder(), link_dir)  # the same file under another path
    proc = run_cli("vcl-index", "remove", str(link_dir / "one.mp4"), "--index", str(index), check=False)
    assert proc.returncode == 1
    assert f"indexed as {_folder() / 'one.mp4'}" in proc.stderr


@pytest.mark.slow
def test_a_partial_remove_exits_0_and_names_the_rest(tmp_path):
    index = _fresh_index(tmp_path)
    missing = tmp_path / "missing.mp4"
    proc = run_cli("vcl-index", "remove", str(_folder() / "two.mp4"), str(missing), "--index", str(index),
                   "--json", check=False)
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["removed"] == 1
    assert [(f["path"], f["kind"]) for f in report["failed"]] == [(str(missing), "not_found")]
