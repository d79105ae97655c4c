"""Without the `classify` extra (scikit-learn, matplotlib) vcl-classify says what to install, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = '''
import os, sys

_HIDDEN = os.environ["HIDE_MODULES"].split(",")

class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Hide())
'''


def _classify(tmp_path: Path, hidden: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "blocker").mkdir(exist_ok=True)
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "HIDE_MODULES": hidden,
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", "from vcl_infer.cli.classify import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.fixture
def probe_file(tmp_path) -> Path:
    pytest.importorskip("sklearn")
    from vcl_infer.probe.linear import LinearProbe

    rng = np.random.default_rng(0)
    return LinearProbe().fit(rng.normal(size=(20, 4)), np.arange(20) % 2).save(tmp_path / "p")


def test_without_scikit_learn_the_probe_commands_name_the_extra(tmp_path, probe_file):
    result = _classify(tmp_path, "sklearn", "predict", "x.mp4", "--probe", str(probe_file))
    assert result.returncode == 1 and "pip install 'vcl[classify]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_without_matplotlib_eval_names_the_extra_before_embedding(tmp_path, probe_file):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nnot_there.mp4,a\n")
    result = _classify(tmp_path, "matplotlib", "eval", "--probe", str(probe_file), "--labels", str(labels),
                       "--split", "all")
    assert result.returncode == 1 and "pip install 'vcl[classify]'" in result.stderr, result.stderr
    assert "matplotlib" in result.stderr and "Traceback" not in result.stderr
