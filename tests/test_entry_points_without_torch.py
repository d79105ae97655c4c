"""On a base install (no torch) the torch-side commands name the extra to install, not a traceback.

torch is hidden from a child interpreter by a ``sitecustomize`` on PYTHONPATH that puts a
meta-path finder raising ModuleNotFoundError for ``torch`` first; the console scripts are
called through the exact targets pyproject.toml installs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = '''
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''


def _scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _run_without_torch(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "blocker").mkdir(exist_ok=True)
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    module, function = _scripts()[script].split(":")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), str(ROOT)])}
    code = f"import sys; sys.argv[0] = {script!r}; from {module} import {function}; {function}()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_the_blocker_really_hides_torch(tmp_path):
    shown = _run_without_torch(tmp_path, "vcl-index", "--help")
    assert shown.returncode == 0  # the runtime works without torch
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocker")}
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


@pytest.mark.parametrize("script, extra, args", [
    ("vcl-train", "train", ["--list-methods"]),
    ("vcl-train", "train", ["--method", "simclr", "--data", ".", "--out", "run", "--max-steps", "1"]),
    ("vcl-train-eval", "train", ["linear", "--data", "."]),
    ("vcl-export", "export", ["--arch", "r3d_small", "--out", "m.onnx"]),
])
def test_a_torch_command_without_torch_names_its_extra(tmp_path, script, extra, args):
    result = _run_without_torch(tmp_path, script, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"pip install 'vcl[{extra}]'" in result.stderr and "'torch'" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_vcl_synth_needs_no_torch(tmp_path):
    result = _run_without_torch(tmp_path, "vcl-synth", str(tmp_path / "s"), "--classes", "2", "--videos-per-class",
                                "5", "--frames", "4", "--size", "16", "--json")
    assert result.returncode == 0, result.stderr
