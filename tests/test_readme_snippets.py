"""The README's Python snippets, each run as a plain script (no ``if __name__ == "__main__":``).

A new user pastes a snippet into ``x.py`` and runs ``python x.py``. Decode workers used to
be ``multiprocessing`` spawn children, which re-run that script and died while starting.

Every ```python block of README.md runs, unless the line before its fence is
``<!-- not run -->``. The test provides what a user would have around a snippet, in the
script's folder: ``clip.mp4`` and ``other.mp4`` (small videos), ``models/r21d.onnx`` (an
encoder bundle: the packaged default), ``my-index`` (an index of those videos built with the
default encoder), and the names ``paths`` (the two videos), ``train_vectors`` and
``train_labels`` (a tiny labelled set), defined before the snippet.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from video_fixtures import make_video

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP_MARK = "<!-- not run -->"

PRELUDE = '''\
# --- provided by tests/test_readme_snippets.py: what a user has around the snippet ---
import numpy as np
paths = ["clip.mp4", "other.mp4"]
train_vectors = np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32)
train_labels = np.arange(24) % 3
# --- the README snippet, as pasted ---
'''


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python blocks meant to run (see the module docstring)."""
    blocks = []
    for match in re.finditer(r"^```python[ \t]*\n(.*?)^```", text, flags=re.S | re.M):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        blocks.append(match.group(1))
    return blocks




@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    from vcl_infer.encode.embedder import DEFAULT_BUNDLE
    from vcl_infer.index.build import build_index

    folder = tmp_path_factory.mktemp("readme-user")
    make_video(folder / "clip.mp4", num_frames=40, width=96, height=64)
    make_video(folder / "other.mp4", num_frames=30, width=80, height=64, fps=15)
    (folder / "models").mkdir()
    for sibling in DEFAULT_BUNDLE.parent.glob(DEFAULT_BUNDLE.stem + ".*"):
        shutil.copy(sibling, folder / "models" / sibling.name.replace(DEFAULT_BUNDLE.stem, "r21d", 1))
    videos = folder / "videos"
    videos.mkdir()
    for name in ("clip.mp4", "other.mp4"):
        shutil.copy(folder / name, videos / name)
    build_index(videos, folder / "my-index", clips=2, workers=1, progress=False)
    return folder


def test_the_readme_has_python_snippets():
    assert python_blocks(README.read_text()), "README.md has no ```python block to run"


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(python_blocks(README.read_text()))))
def test_a_readme_python_snippet_runs_as_a_plain_script(user_folder, number):
    code = python_blocks(README.read_text())[number]
    script = user_folder / f"snippet_{number}.py"
    script.write_text(PRELUDE + code)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script)], cwd=user_folder, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
        f"README snippet {number} failed as a plain script:\n{code}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
