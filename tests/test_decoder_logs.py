"""Native decoder output (decord's "Failed to skip frames effectively" floods) never reaches the
terminal: it is caught in the worker and reported as one log line per file, quiet by default.

decord writes those lines to file descriptor 2 from C++, ignoring its log level. The test
makes decord do exactly that, in every process, with a ``sitecustomize`` module that wraps
``decord.VideoReader.get_batch`` to ``os.write(2, ...)`` 300 such lines per call (the fd-level
write native code does; ``sys.stderr`` is not involved).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from video_fixtures import make_video

ROOT = Path(__file__).resolve().parents[1]
LINE = "src/video/video_reader.cc:580: Failed to skip frames effectively at frame 12"

SITECUSTOMIZE = textwrap.dedent(f'''
    import importlib.abc
    import importlib.util
    import os
    import sys

    class _ChattyDecord(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "decord":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec("decord")
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                original = module.VideoReader.get_batch

                def get_batch(self, *args, **kwargs):
                    os.write(2, b"{LINE}\\n" * 300)
                    return original(self, *args, **kwargs)

                module.VideoReader.get_batch = get_batch

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _ChattyDecord())
''')


@pytest.fixture()
def chatty_env(tmp_path) -> dict:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))


@pytest.fixture()
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    make_video(folder / "one.mp4", num_frames=30)
    make_video(folder / "two.mp4", num_frames=30)
    return folder


def _run(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_injected_decord_really_floods_fd_2(chatty_env, videos, tmp_path):
    code = f"from vcl_infer.video.clips import read_clips; from vcl_infer.clips.spec import ClipSpec; " \
           f"read_clips({str(videos / 'one.mp4')!r}, ClipSpec(), 2, backend='decord')"
    proc = _run(code, chatty_env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("Failed to skip frames") >= 300


@pytest.mark.slow
def test_a_build_prints_no_decoder_output_by_default(chatty_env, videos, tmp_path):
    code = "from vcl_infer.cli.index import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, "build", str(videos), "--index", str(tmp_path / "idx"),
                           "--clips", "2", "--workers", "1"], env=chatty_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 added" in proc.stdout
    assert "Failed to skip frames" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_with_logging_on_each_file_gets_one_line(chatty_env, videos, tmp_path):
    code = textwrap.dedent(f"""
        import logging
        logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
        from vcl_infer.index.build import build_index
        build_index({str(videos)!r}, {str(tmp_path / 'idx')!r}, clips=2, workers=1, progress=False)
        from vcl_infer.search.query import search_index
        search_index({str(tmp_path / 'idx')!r}, {str(videos / 'one.mp4') + '@0-2'!r}, k=1)
    """)
    proc = _run(code, chatty_env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vcl_infer.decoder")]
    assert len(lines) == 3, proc.stderr[-3000:]  # two files built, one range query
    assert sum("one.mp4" in line for line in lines) == 2 and sum("two.mp4" in line for line in lines) == 1
    for line in lines:
        assert "Failed to skip frames" in line and "line(s)" in line
    assert proc.stderr.count("Failed to skip frames") == 3
