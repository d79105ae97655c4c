"""Ray, pyarrow and FastAPI stay optional: nothing loads them unless a distributed build,
an ingest or the server runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from video_fixtures import make_video

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_distributed_package_and_the_cli_loads_no_ray_or_pyarrow():
    code = ("import sys, vcl_infer.distributed, vcl_infer.cli.index, vcl_infer.serve\n"
            "print([m for m in ('ray', 'pyarrow', 'fastapi', 'uvicorn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_a_local_build_imports_no_ray(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    make_video(folder / "a.mp4", num_frames=12)
    code = ("import sys; from vcl_infer.cli.index import main\n"
            "try:\n    main(['build', sys.argv[1], '--index', sys.argv[2], '--json'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('LOADED', [m for m in ('ray', 'pyarrow', 'fastapi') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "idx")], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"
