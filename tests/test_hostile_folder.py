"""The hostile-folder run: a build over everything that can go wrong at once.

The folder holds every video of ``../shared/videos`` (some broken on purpose), truncated
copies, random bytes, an HLS playlist named ``.mp4``, a frame-size bomb (a 5000 x 5000 frame
declared in the headers), a FIFO, a ``/dev/zero`` link, a dangling link and a link loop,
files with collapsed and with wildly variable timestamps, and a file that is being appended
to while the build runs. The build must end (bounded: every step has a timeout) with no
traceback, no decode timeout, every bad file failed with a reason, every good file indexed
with clip windows inside the video, and a search on the collapsed-timestamps file must find
it. A non-UTF-8 file name is tried on its own (see ``test_a_non_utf8_name``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_hostile_inputs import collapsed_video, vfr_video
from video_fixtures import VIDEOS, make_video

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 420

pytestmark = pytest.mark.slow


def _cli(module: str, *args: str, timeout: float = BUILD_TIMEOUT_S) -> subprocess.CompletedProcess:
    code = f"from vcl_infer.cli.{module} import main; main()"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _truncate(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _bomb(path: Path) -> None:
    """One flat 5000 x 5000 frame: tiny file, 25 M pixels declared (the cap is 4096 x 4096)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width = stream.height = 5000
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "1"}
        frame = av.VideoFrame.from_ndarray(np.zeros((5000, 5000, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


def _hostile_folder(root: Path) -> tuple[Path, dict[str, str], set[str]]:
    """The folder, ``{name: what must be in its failure reason}`` for files that must fail,
    and the names that must be indexed."""
    folder = root / "hostile"
    folder.mkdir()
    must_fail: dict[str, str] = {}
    must_index: set[str] = set()
    if VIDEOS.is_dir():
        for src in sorted(VIDEOS.rglob("*")):
            if src.is_file() and src.suffix.lower() in {".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv", ".wmv"}:
                link = folder / "shared" / src.relative_to(VIDEOS)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src, link)
        demo, pancake = VIDEOS / "mmaction2" / "demo.mp4", VIDEOS / "decord" / "flipping_a_pancake.mkv"
        if demo.is_file():
            _truncate(demo, folder / "demo_half.mp4", 0.5)
            _truncate(demo, folder / "demo_tiny.mp4", 0.02)
            must_fail["demo_tiny.mp4"] = ""  # 2 % of a file: no decodable frame
        if pancake.is_file():
            _truncate(pancake, folder / "pancake_third.mkv", 0.33)
    make_video(folder / "good.mp4", num_frames=40, width=96, height=64)
    must_index.add("good.mp4")
    collapsed_video(folder / "collapsed.mp4")
    vfr_video(folder / "vfr.mp4")
    must_index |= {"collapsed.mp4", "vfr.mp4"}
    rng = np.random.default_rng(0)
    (folder / "random.mp4").write_bytes(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "playlist.mp4").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n")
    _bomb(folder / "bomb.mp4")
    os.mkfifo(folder / "fifo.mp4")
    os.symlink("/dev/zero", folder / "zero.mp4")
    os.symlink(folder / "nowhere.mp4", folder / "dangling.mp4")
    os.symlink(folder / "loop_b.mp4", folder / "loop_a.mp4")
    os.symlink(folder / "loop_a.mp4", folder / "loop_b.mp4")
    must_fail.update({
        "random.mp4": "", "empty.mp4": "empty", "playlist.mp4": "HLS playlist", "bomb.mp4": "5000x5000",
        "fifo.mp4": "FIFO", "zero.mp4": "device", "dangling.mp4": "dangling", "loop_a.mp4": "loop",
        "loop_b.mp4": "loop",
    })
    return folder, must_fail, must_index


def _grow(path: Path, data: bytes, start: int, stop: threading.Event) -> None:
    """Append ``data[start:]`` to ``path`` in small pieces until done (or told to stop)."""
    with open(path, "ab") as fh:
        for at in range(start, len(data), 4096):
            if stop.is_set():
                return
            fh.write(data[at : at + 4096])
            fh.flush()
            time.sleep(0.02)


def _catalog(index: Path) -> dict[str, tuple[str, list[tuple[float, float]], float]]:
    from vcl_infer.index import VideoIndex

    out = {}
    with VideoIndex.open(index) as idx:
        for path, (_, _, status) in idx.known_files().items():
            vid = idx.catalog.db.execute("SELECT id FROM videos WHERE path = ?", (path,)).fetchone()[0]
            record = idx.video(vid)
            windows = [(c.start_sec, c.end_sec) for c in idx.clips_of(vid)] if status == "ok" else []
            out[path] = (status, windows, float(record.duration or 0.0))
    return out


def test_the_hostile_folder_builds_with_every_bad_file_explained(tmp_path):
    folder, must_fail, must_index = _hostile_folder(tmp_path)
    long_video = tmp_path / "long.mp4"
    make_video(long_video, num_frames=300, width=160, height=120)
    data = long_video.read_bytes()
    growing = folder / "growing.mp4"
    growing.write_bytes(data[: len(data) // 3])
    stop = threading.Event()
    grower = threading.Thread(target=_grow, args=(growing, data, len(data) // 3, stop), daemon=True)
    index = tmp_path / "index"
    grower.start()
    try:
        proc = _cli("index", "build", str(folder), "--index", str(index), "--clips", "3", "--workers", "2",
                    "--json")
    finally:
        stop.set()
        grower.join()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    report = json.loads(proc.stdout)
    failed = {os.path.relpath(f["path"], folder): f for f in report["failed"]}
    assert not [f for f in failed.values() if f["kind"] == "timeout"], failed  # 0 hangs
    for name, f in failed.items():
        assert f["kind"] and f["reason"], (name, f)
    for name, expected in must_fail.items():
        assert name in failed, f"{name} should have failed: {failed.keys()}"
        assert expected in failed[name]["reason"], (name, failed[name])
    assert failed["bomb.mp4"]["kind"] == "frame_too_large"
    catalog = {os.path.relpath(p, folder): v for p, v in _catalog(index).items()}
    walked = {os.path.relpath(p, folder) for p in _walk(folder)}
    assert set(catalog) == walked  # every file is either indexed or a failure with its reason
    assert {n for n, (status, _, _) in catalog.items() if status == "failed"} == set(failed)
    for name in must_index:
        assert catalog[name][0] == "ok", (name, failed.get(name))
    for name, (_, windows, duration) in catalog.items():
        for start, end in windows:  # clip windows stay inside the video
            assert 0 <= start <= end <= duration + 1.0, (name, start, end, duration)
    assert max(end for _, end in catalog["collapsed.mp4"][1]) > 9.0  # timed by index over 25 fps
    if VIDEOS.is_dir():
        assert catalog["shared/mmaction2/demo.mp4"][0] == "ok"
        assert failed["shared/small/mp4-with-audio.mp4"]["kind"] == "no_video_stream"

    # the grown file, complete now, is indexed on the next run; nothing else changes
    again = _cli("index", "build", str(folder), "--index", str(index), "--clips", "3", "--workers", "2", "--json")
    assert again.returncode == 0 and "Traceback" not in again.stdout + again.stderr
    assert _catalog(index)[str(growing)][0] == "ok"

    # the collapsed-timestamps file is searchable like any other; a FIFO query is refused cleanly
    hit = _cli("search", str(folder / "collapsed.mp4"), "--index", str(index), "-k", "1", "--json", timeout=180)
    assert hit.returncode == 0, hit.stderr[-3000:]
    assert json.loads(hit.stdout)["results"][0]["video"] == str(folder / "collapsed.mp4")
    fifo = _cli("search", str(folder / "fifo.mp4"), "--index", str(index), timeout=60)
    assert fifo.returncode == 1 and "a FIFO" in fifo.stderr and "Traceback" not in fifo.stderr


def _walk(folder: Path) -> list[str]:
    from vcl_infer.index.build import find_videos

    return find_videos(folder)


def test_a_non_utf8_name(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_video(folder / "good.mp4", num_frames=20)
    shutil.copy(folder / "good.mp4", os.fsdecode(bytes(folder) + b"/bad_\xff\xfe_name.mp4"))
    proc = _cli("index", "build", str(folder), "--index", str(tmp_path / "index"), "--clips", "2",
                "--workers", "1", "--json")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]
    report = json.loads(proc.stdout)
    assert report["added"] + report["failed_count"] == 2
    for failure in report["failed"]:
        assert failure["reason"]
