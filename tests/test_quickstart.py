"""`make demo` says when it skips the real videos, and takes the user's folder (VIDEOS=DIR)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


def _quickstart():
    return load_script("scripts/quickstart.py", "quickstart")


def test_without_shared_videos_or_a_folder_the_skip_is_announced(tmp_path, monkeypatch, capsys):
    quickstart = _quickstart()
    monkeypatch.setattr(quickstart, "SHARED_VIDEOS", tmp_path / "no_shared" / "videos")
    assert quickstart.real_folder(None) is None
    said = capsys.readouterr().out
    assert "SKIPS the real-video part" in said and "make demo VIDEOS=~/Videos" in said


def test_a_given_folder_wins_and_a_missing_one_is_refused(tmp_path, monkeypatch):
    quickstart = _quickstart()
    mine = tmp_path / "Videos"
    mine.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert quickstart.real_folder("~/Videos") == mine.resolve()
    with pytest.raises(SystemExit, match="not a folder"):
        quickstart.real_folder(str(tmp_path / "nope"))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_passes_videos_to_the_script(tmp_path):
    dry = subprocess.run(["make", "-n", "demo", f"VIDEOS={tmp_path}/my videos", f"VENV={tmp_path}/venv"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f'scripts/quickstart.py --videos "{tmp_path}/my videos"' in dry
    plain = subprocess.run(["make", "-n", "demo", f"VENV={tmp_path}/venv"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout
    assert "--videos" not in plain
