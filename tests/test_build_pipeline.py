"""The build pipeline: failures recorded, incremental re-runs, kill -9 and resume, no torch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_build_corpus import BIN, CLIPS, built_index, bundle, corpus, indexed_shared, run_cli, workdir

BAD_KINDS = {"corrupt", "unsupported_format", "no_video_stream"}


def _catalog(index_dir: Path) -> dict:
    """path -> (status, [(start, end)], clip vectors, video vector) of every file in the index."""
    from vcl_infer.index import VideoIndex

    index = VideoIndex.open(index_dir)
    out = {}
    for path, (_, _, status) in index.known_files().items():
        if status != "ok":
            out[path] = (status, [], None)
            continue
        vid = _video_id(index, path)
        windows = [(round(c.start_sec, 6), round(c.end_sec, 6)) for c in index.clips_of(vid)]
        out[path] = (status, windows, index.clip_vectors(vid))
    index.close()
    return out


def _video_id(index, path: str) -> int:
    return index.catalog.db.execute("SELECT id FROM videos WHERE path = ?", (path,)).fetchone()[0]


def _small_dir(name: str, count: int, copies: int = 1) -> Path:
    """A folder of ``count`` generated videos, each ``copies`` times under other names (copies,
    so tests may touch and delete them)."""
    folder = workdir() / name
    folder.mkdir()
    for src in sorted((corpus() / "gen").glob("short_*.mp4"))[:count]:
        for k in range(copies):
            shutil.copy2(src, folder / (src.name if k == 0 else f"{src.stem}_copy{k}{src.suffix}"))
    return folder


@pytest.mark.slow
def test_bad_files_are_listed_with_reasons_and_the_build_finishes():
    if not indexed_shared():
        pytest.skip("../shared/videos not found")
    index, report = built_index()
    assert report["completed"] and report["failed_count"] == len(report["failed"]) >= 1
    failed = {Path(f["path"]).relative_to(corpus()).as_posix(): f for f in report["failed"]}
    assert {"shared/small/Mpeg4.mp4", "shared/small/mp4-with-audio.mp4"} <= set(failed)
    assert failed["shared/small/mp4-with-audio.mp4"]["kind"] == "no_video_stream"
    for f in failed.values():
        assert f["kind"] in BAD_KINDS and f["reason"]
    # the real action clips are in, with CLIPS clips each
    from vcl_infer.index import VideoIndex

    idx = VideoIndex.open(index)
    for name in ("mmaction2/demo.mp4", "decord/flipping_a_pancake.mkv", "decord/video_90.mov"):
        rec = idx.video(_video_id(idx, str(corpus() / "shared" / name)))
        assert rec.status == "ok" and rec.num_clips == CLIPS
    assert {r.path for r in idx.failures()} == {f["path"] for f in report["failed"]}
    assert report["added"] + report["failed_count"] == len(list(corpus().rglob("*.*")))


def test_strict_exits_non_zero_when_a_file_failed(tmp_path):
    folder = _small_dir("strict", 2)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))
    proc = run_cli("vcl-index", "build", str(folder), "--index", str(tmp_path / "i1"), "--model", bundle(),
                   "--clips", "2", "--strict", check=False)
    assert proc.returncode != 0 and "could not be indexed (--strict)" in proc.stderr
    assert "broken.mp4" in proc.stderr
    proc = run_cli("vcl-index", "build", str(folder), "--index", str(tmp_path / "i2"), "--model", bundle(),
                   "--clips", "2", "--json", check=False)
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["added"] == 2 and data["failed_count"] == 1 and data["failed"][0]["path"].endswith("broken.mp4")


def test_incremental_rebuild_skips_updates_and_removes(tmp_path):
    from vcl_infer.index.build import build_index

    folder = _small_dir("incremental", 4)
    index = tmp_path / "index"
    kw = dict(model=bundle(), clips=2, workers=1, progress=False)
    first = build_index(folder, index, **kw)
    assert (first.added, first.skipped, first.updated, first.removed) == (4, 0, 0, 0)
    again = build_index(folder, index, **kw)
    assert (again.added, again.skipped, again.updated, again.removed, again.clips) == (0, 4, 0, 0, 0)

    before = _catalog(index)
    touched, gone = sorted(folder.glob("*.mp4"))[:2]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    gone.unlink()
    third = build_index(folder, index, **kw)
    assert (third.added, third.skipped, third.updated, third.removed) == (0, 2, 1, 1)
    after = _catalog(index)
    assert set(after) == set(before) - {str(gone)}
    assert after[str(touched)][1] == before[str(touched)][1]
    np.testing.assert_allclose(after[str(touched)][2], before[str(touched)][2], atol=1e-5)
    saved = json.loads((index / "build_report.json").read_text())
    assert saved["updated"] == 1 and saved["removed"] == 1 and saved["skipped"] == 2


def _wait_for_commit(index: Path, proc: subprocess.Popen, videos: int, timeout: float = 120) -> int:
    from vcl_infer.index import VideoIndex

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            idx = VideoIndex.open(index)
            n = idx.info()["videos_ok"]
            idx.close()
            if n >= videos:
                return n
        except Exception:  # noqa: BLE001 - not created yet, or mid-commit
            pass
        time.sleep(0.05)
    return -1


def test_kill_9_then_rerun_equals_an_uninterrupted_build(tmp_path):
    # enough files that an idle machine is still building when the second commit is seen
    folder = _small_dir("killed", 16, copies=4)
    total = len(list(folder.iterdir()))
    args = ["build", str(folder), "--model", bundle(), "--clips", "2", "--workers", "1"]
    run_cli("vcl-index", *args, "--index", str(tmp_path / "clean"))

    killed = tmp_path / "killed"
    proc = subprocess.Popen([str(BIN / "vcl-index"), *args, "--index", str(killed), "--commit-every", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        seen = _wait_for_commit(killed, proc, 2)
        still_running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)  # the build and its decode workers, mid-run
    finally:
        proc.wait(30)
    assert still_running and 2 <= seen < total, "the build was not killed mid-run"
    # (a reader may now be refused until a writer finishes the interrupted commit: by design)
    run_cli("vcl-index", *args, "--index", str(killed))
    report = json.loads((killed / "build_report.json").read_text())
    assert report["skipped"] >= seen and report["added"] + report["skipped"] + report["updated"] == total

    clean, resumed = _catalog(tmp_path / "clean"), _catalog(killed)
    assert sorted(resumed) == sorted(clean)
    for path, (status, windows, vectors) in clean.items():
        assert resumed[path][0] == status and resumed[path][1] == windows
        np.testing.assert_allclose(resumed[path][2], vectors, atol=1e-5)
    from vcl_infer.index import VideoIndex

    idx = VideoIndex.open(killed)
    assert idx.info()["clips"] == 2 * total
    rows = idx.catalog.db.execute("SELECT path, COUNT(*) FROM videos GROUP BY path HAVING COUNT(*) > 1").fetchall()
    assert rows == []
    assert "ok:" in run_cli("vcl-index", "verify", "--index", str(killed)).stdout


_NO_TORCH = '''
import atexit, importlib.abc, os, sys

class _BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test (the runtime must not need it)")
        return None

sys.meta_path.insert(0, _BlockTorch())

@atexit.register
def _report():
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    with open(os.environ["VCL_TORCH_REPORT"], "a") as fh:
        fh.write(f"{os.getpid()} {' '.join(loaded) or '-'}\\n")
'''


def test_build_and_search_run_without_torch(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_TORCH)
    report = tmp_path / "torch_report.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               VCL_TORCH_REPORT=str(report))
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "torch is blocked" in probe.stderr  # the blocker works
    folder = _small_dir("no_torch", 3)
    index = tmp_path / "index"
    run_cli("vcl-index", "build", str(folder), "--index", str(index), "--model", bundle(), "--clips", "2", env=env)
    out = run_cli("vcl-search", str(folder / "short_01.mp4"), "--index", str(index), "--json", "-k", "2", env=env)
    assert json.loads(out.stdout)["results"][0]["video"] == str(folder / "short_01.mp4")
    lines = report.read_text().split("\n")
    entries = [ln.split(" ", 1) for ln in lines if ln]
    assert len(entries) >= 3  # the probe, the CLIs and their decode workers
    assert all(loaded == "-" for _, loaded in entries), entries


def test_decode_workers_start_before_the_encoder_loads_and_get_the_largest_files_first(tmp_path, monkeypatch):
    """The workers' start-up (imports) overlaps the model load, and the largest files are
    decoded first, so a long video is not the last thing a build waits for."""
    import vcl_infer.index.build as build
    from vcl_infer.video.isolated import DecodePool

    events: list[str] = []
    requested: list[str] = []
    pool_init, load, feed = DecodePool.__init__, build.load_embedder, build._decoded_in_background

    def record_pool(self, *args, **kwargs):
        events.append("pool")
        pool_init(self, *args, **kwargs)

    def record_load(*args, **kwargs):
        events.append("model")
        return load(*args, **kwargs)

    def record_requests(pool, requests, depth):
        requested.extend(request[0] for request in requests)
        return feed(pool, requests, depth)

    monkeypatch.setattr(DecodePool, "__init__", record_pool)
    monkeypatch.setattr(build, "load_embedder", record_load)
    monkeypatch.setattr(build, "_decoded_in_background", record_requests)
    folder = tmp_path / "videos"
    folder.mkdir()
    by_size = sorted((corpus() / "gen").glob("short_*.mp4"), key=lambda p: p.stat().st_size)[:3]
    assert len({p.stat().st_size for p in by_size}) == 3
    for name, src in zip("abc", by_size):  # path order = smallest first
        shutil.copy2(src, folder / f"{name}.mp4")
    report = build.build_index(folder, tmp_path / "index", model=bundle(), clips=CLIPS, progress=False)
    assert report.added == 3 and not report.failed
    assert events == ["pool", "model"]
    assert [Path(p).name for p in requested] == ["c.mp4", "b.mp4", "a.mp4"]
