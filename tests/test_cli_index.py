"""``vcl-index`` subcommands: info, verify, repair, add, remove, and their error messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from test_build_corpus import bundle, corpus, run_cli, workdir


def test_help_is_instant_and_imports_nothing_heavy():
    code = ("import sys; from vcl_infer.cli import index, search; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'faiss', 'decord', 'av', 'vcl_infer.index.build', "
            "'vcl_infer.search.query') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for cmd in (["vcl-index", "build", "--help"], ["vcl-search", "--help"]):
        text = run_cli(*cmd).stdout
        assert "--index" in text and "--model" in text


def _index_of(name: str, count: int = 3):
    folder = workdir() / f"{name}_videos"
    folder.mkdir()
    for src in sorted((corpus() / "gen").glob("short_*.mp4"))[:count]:
        shutil.copy2(src, folder / src.name)
    index = workdir() / f"{name}_index"
    run_cli("vcl-index", "build", str(folder), "--index", str(index), "--model", bundle(), "--clips", "2")
    return folder, index


def test_info_verify_add_remove_repair():
    folder, index = _index_of("cli", 3)
    data = json.loads(run_cli("vcl-index", "info", "--index", str(index), "--json").stdout)
    assert data["videos_ok"] == 3 and data["clips"] == 6 and data["videos_failed"] == 0
    assert "videos_ok" in run_cli("vcl-index", "info", "--index", str(index)).stdout
    assert "ok:" in run_cli("vcl-index", "verify", "--index", str(index)).stdout

    extra = workdir() / "cli_extra.mp4"
    shutil.copy2(corpus() / "gen" / "short_20.mp4", extra)
    out = run_cli("vcl-index", "add", str(extra), str(workdir() / "missing.mp4"), "--index", str(index),
                  "--model", bundle()).stdout
    assert "1 added" in out and "1 failed" in out
    data = json.loads(run_cli("vcl-index", "info", "--index", str(index), "--json").stdout)
    assert data["videos_ok"] == 4 and data["clips"] == 8  # --clips of the build is kept

    victim = sorted(folder.glob("*.mp4"))[0]
    assert "removed 1 of 1" in run_cli("vcl-index", "remove", str(victim), "--index", str(index)).stdout
    data = json.loads(run_cli("vcl-index", "info", "--index", str(index), "--json").stdout)
    assert data["videos_ok"] == 3

    (index / "clips.faiss").unlink()
    proc = run_cli("vcl-index", "verify", "--index", str(index), check=False)
    assert proc.returncode != 0 and "repair" in proc.stderr
    run_cli("vcl-index", "repair", str(index))  # the form the index's error messages print
    assert "ok:" in run_cli("vcl-index", "verify", "--index", str(index)).stdout


def test_errors_say_the_fix(tmp_path):
    from vcl_infer.encode.embedder import DEFAULT_BUNDLE
    from vcl_infer.index import VideoIndex

    proc = run_cli("vcl-index", "info", "--index", str(tmp_path / "nowhere"), check=False)
    assert proc.returncode != 0 and "Error" in proc.stderr
    proc = run_cli("vcl-search", str(corpus() / "gen" / "short_00.mp4"), "--index", str(tmp_path / "nowhere"),
                   check=False)
    assert proc.returncode != 0 and "vcl-index build" in proc.stderr

    other = tmp_path / "other"
    VideoIndex.create(other, fingerprint="sha256:" + "1" * 64, spec_json="{}", dim=128).close()
    proc = run_cli("vcl-index", "build", str(corpus() / "gen"), "--index", str(other), "--model", bundle(),
                   check=False)
    assert proc.returncode != 0 and "Error" in proc.stderr and "Traceback" not in proc.stderr

    if not DEFAULT_BUNDLE.is_file():
        proc = run_cli("vcl-index", "build", str(corpus() / "gen"), "--index", str(tmp_path / "d"), check=False)
        assert proc.returncode != 0 and "--model" in proc.stderr and "Traceback" not in proc.stderr
