"""The runtime stays lean: importing it loads no heavy package, and it installs without torch."""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "onnxruntime", "tensorrt", "faiss", "decord", "av", "onnx", "cv2", "sklearn", "matplotlib"]
RUNTIME_MODULES = [
    "vcl_infer", "vcl_infer.clips.spec", "vcl_infer.clips.sampling", "vcl_infer.clips.preprocess", "vcl_infer.encode.bundle",
    "vcl_infer.video.reader", "vcl_infer.video.open", "vcl_infer.video.isolated",
    "vcl_infer.cli.index", "vcl_infer.cli.search", "vcl_infer.encode.embedder", "vcl_infer.probe.classify",
    "vcl_infer.probe.evaluation", "vcl_infer.cli.classify", "vcl_infer.cli.evaluate", "vcl_infer.search.png",
    "vcl_infer.probe.retrieval_metrics", "vcl_infer.encode._onnx_external", "vcl_infer.encode.backends",
    "vcl_infer.encode.backends.tensorrt_backend", "vcl_infer.encode.backends.onnxruntime_backend",
    "vcl_infer.index", "vcl_infer.index.build", "vcl_infer.search.query", "vcl_infer.search.html_report",
]


def test_importing_the_runtime_loads_no_heavy_package():
    code = (
        "import importlib, json, sys\n"
        f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
        "import vcl_infer; vcl_infer.ClipSpec; vcl_infer.uniform_clips\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_a_venv_with_only_the_base_install_runs_the_runtime_commands(tmp_path):
    """pip install . (no extras) into a fresh venv: no torch, and the CLIs' --help work."""
    env_dir = tmp_path / "lean"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    for command in ("vcl-index", "vcl-search"):
        shown = subprocess.run([str(env_dir / "bin" / command), "--help"], capture_output=True, text=True, env=env)
        assert shown.returncode == 0 and "Usage" in shown.stdout, shown.stderr
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u, vcl_infer; print(u.find_spec('torch') is None, vcl_infer.ClipSpec().crop_size)"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert probe.stdout.split() == ["True", "112"], probe.stderr
