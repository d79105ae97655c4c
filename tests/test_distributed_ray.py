"""``--engine ray`` on a local Ray instance (loopback, 2 CPUs, one session for the module):
the same videos, windows and vectors as a local build (bit-exact), bad files included, with
the default stride sampling (a 13 s video gets a clip a second, not the floor of 8) and with
explicit options; a driver killed mid-run resumes without re-embedding what is in its shards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from video_fixtures import VIDEOS, make_video

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported: a loopback-only node
ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
LONG_FRAMES = 200  # 20 s at 10 fps: 20 clips at the default stride of 1 s (more than the floor
# of 8), streamed by the decoder in two parts
SHARED = ["mmaction2/test.avi", "nwb-video-widgets/stub_h264.mp4", "small/Mpeg4.mp4", "small/FlashVideo.flv",
          "decord/corrupted.mp4"]


@pytest.fixture(scope="module")
def ray_address():
    from vcl_infer.distributed.pipeline import _init

    _init(ray, None, 2)  # retried: a loaded machine can miss Ray's fixed 30 s raylet start-up
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), address
        yield address
    finally:
        ray.shutdown()


def _folder(root: Path, generated: int) -> Path:
    """Generated videos (one long enough for the stride to give more clips than the floor), a
    few shared real files (good and bad), and two non-videos."""
    folder = root / "videos"
    (folder / "sub").mkdir(parents=True)
    make_video(folder / "long.mp4", num_frames=LONG_FRAMES, width=64, height=48, fps=10)
    for i in range(generated):
        make_video(folder / "sub" / f"gen_{i}.mp4", num_frames=20 + 3 * i, width=64, height=48)
    for rel in SHARED:
        if (VIDEOS / rel).is_file():
            shutil.copy2(VIDEOS / rel, folder / rel.replace("/", "_"))
    (folder / "notes.mp4").write_text("#EXTM3U\nnot a video\n")
    (folder / "empty.mkv").write_bytes(b"")
    return folder


def _catalog(index_dir: Path) -> dict:
    """path -> everything a build stores about it (ids aside)."""
    from vcl_infer.index import VideoIndex

    index = VideoIndex.open(index_dir)
    try:
        assert index.verify() == []
        out = {}
        for path, (size, mtime_ns, status) in index.known_files().items():
            vid = index.video_id(path)
            rec = index.video(vid)
            out[path] = {"record": (status, size, mtime_ns, rec.content_hash, rec.duration, rec.fps, rec.frames,
                                    rec.width, rec.height, rec.backend, rec.error_kind, rec.error),
                         "windows": [(c.start_sec, c.end_sec) for c in index.clips_of(vid)],
                         "vectors": index.clip_vectors(vid)}
        return out
    finally:
        index.close()


def _recorded(index_dir: Path) -> tuple:
    """The sampling rule and the recall target an index was built with."""
    from vcl_infer.clips.sampling_record import read_sampling
    from vcl_infer.index import VideoIndex

    index = VideoIndex.open(index_dir)
    try:
        return read_sampling(index_dir), index.target_recall
    finally:
        index.close()


def _assert_same(local: dict, distributed: dict) -> None:
    assert sorted(local) == sorted(distributed)
    for path in local:
        a, b = local[path], distributed[path]
        assert a["record"] == b["record"], path
        assert a["windows"] == b["windows"], path
        assert a["vectors"].shape == b["vectors"].shape and np.array_equal(a["vectors"], b["vectors"]), path


def test_a_ray_build_equals_the_local_build_bit_exactly_bad_files_included(ray_address, tmp_path):
    from vcl_infer.clips.sampling import ClipSampling
    from vcl_infer.clips.sampling_record import read_sampling
    from vcl_infer.distributed import build_with_ray, ingest_shards
    from vcl_infer.index.build import build_index
    from vcl_infer.video.clips import PART_CLIPS

    folder = _folder(tmp_path, generated=3)
    local = build_index(folder, tmp_path / "local", workers=2, progress=False)
    report = build_with_ray(folder, tmp_path / "ray", batch_size=3, progress=False)
    assert local.failed and {f.path for f in report.failed} == {f.path for f in local.failed}
    assert {(f.kind, f.reason) for f in report.failed} == {(f.kind, f.reason) for f in local.failed}
    assert report.embedded_now == report.added + len(report.failed) == local.added + len(local.failed)
    reference = _catalog(tmp_path / "local")
    _assert_same(reference, _catalog(tmp_path / "ray"))
    long_windows = reference[str(folder / "long.mp4")]["windows"]
    assert len(long_windows) > PART_CLIPS and long_windows[1][0] - long_windows[0][0] == pytest.approx(1.0)
    assert read_sampling(tmp_path / "ray") == read_sampling(tmp_path / "local") == ClipSampling()
    assert report.sampling == local.sampling and report.clips == local.clips

    again = ingest_shards(tmp_path / "ray" / "shards", tmp_path / "ray")  # idempotent
    assert (again.added, again.updated, again.vectors) == (0, 0, 0)
    rerun = build_with_ray(folder, tmp_path / "ray", progress=False)  # incremental: nothing to do
    assert (rerun.embedded_now, rerun.added, rerun.skipped) == (0, 0, len(reference))
    _assert_same(reference, _catalog(tmp_path / "ray"))

    (folder / "sub" / "gen_0.mp4").unlink()
    make_video(folder / "sub" / "gen_1.mp4", num_frames=31, width=64, height=48)  # changed
    after = build_with_ray(folder, tmp_path / "ray", progress=False)
    assert (after.removed, after.updated, after.embedded_now) == (1, 1, 1)
    build_index(folder, tmp_path / "local", workers=2, progress=False)
    _assert_same(_catalog(tmp_path / "local"), _catalog(tmp_path / "ray"))


def test_a_killed_ray_build_resumes_without_re_embedding_its_shards(ray_address, tmp_path):
    from vcl_infer.distributed import build_with_ray
    from vcl_infer.distributed.ingest import shard_keys
    from vcl_infer.index.build import build_index

    folder = _folder(tmp_path, generated=6)
    index_dir = tmp_path / "ray"
    driver = ("import sys; from vcl_infer.distributed import build_with_ray; "
              "build_with_ray(sys.argv[1], sys.argv[2], address=sys.argv[3], batch_size=1, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", driver, str(folder), str(index_dir), ray_address], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = index_dir / "shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(shards.glob("shard-*.parquet"))) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the driver finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # actors of the dead job may still finish the shard they were writing
    done = shard_keys(shards)
    total = len(list(folder.rglob("*.*")))
    assert 2 <= len(done) < total

    report = build_with_ray(folder, index_dir, progress=False)
    assert report.from_shards == len(done)
    assert report.embedded_now == total - len(done)  # what is in a shard is not embedded again
    build_index(folder, tmp_path / "local", workers=2, progress=False)
    _assert_same(_catalog(tmp_path / "local"), _catalog(index_dir))


def test_the_cli_builds_with_ray_on_a_given_address_and_ingests_alone(ray_address, tmp_path):
    import json

    folder = _folder(tmp_path, generated=2)
    cli = [sys.executable, "-c", "from vcl_infer.cli.index import main; main()"]
    options = ["--clip-every", "2.5", "--min-clips", "3", "--max-clips", "5"]
    out = subprocess.run(cli + ["build", str(folder), "--index", str(tmp_path / "idx"), "--engine", "ray",
                                "--address", ray_address, "--no-ingest", "--shards", str(tmp_path / "shards"),
                                *options, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["embedded_now"] == len(list(folder.rglob("*.*")))
    assert not (tmp_path / "idx").exists()  # --no-ingest: shards only
    ingest = subprocess.run(cli + ["ingest", str(tmp_path / "shards"), "--index", str(tmp_path / "idx"),
                                   "--recall", "0.9", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    ingested = json.loads(ingest.stdout)
    assert ingested["added"] >= 2 and ingested["added"] + len(ingested["failed"]) == len(list(folder.rglob("*.*")))
    assert {"notes.mp4", "empty.mkv"} <= {Path(f["path"]).name for f in ingested["failed"] if f["reason"]}
    local = subprocess.run(cli + ["build", str(folder), "--index", str(tmp_path / "local"), "--workers", "2",
                                  "--recall", "0.9", *options, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert local.returncode == 0, local.stderr[-3000:]
    _assert_same(_catalog(tmp_path / "local"), _catalog(tmp_path / "idx"))
    assert len(_catalog(tmp_path / "idx")[str(folder / "long.mp4")]["windows"]) == 5  # 20 s / 2.5 s, capped at 5
    assert _recorded(tmp_path / "idx") == _recorded(tmp_path / "local")
    refused = subprocess.run(cli + ["build", str(folder), "--index", str(tmp_path / "idx2"), "--address", ray_address],
                             capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0 and "need --engine ray" in refused.stderr and "Traceback" not in refused.stderr
