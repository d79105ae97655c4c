"""Vector shards and the ingest writer, without Ray: exact round trips, checksums, idempotence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from vcl_infer.clips.sampling import ClipSampling  # noqa: E402
from vcl_infer.distributed.ingest import ingest_shards  # noqa: E402
from vcl_infer.distributed.shards import ShardError, ShardMeta, ShardRow, read_rows, write_shard  # noqa: E402
from vcl_infer.index import EncoderMismatch, VideoIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIM = 4
META = ShardMeta(fingerprint="sha256:" + "ab" * 32, spec_json=json.dumps({"arch": "test"}), dim=DIM,
                 sampling=ClipSampling.fixed(2))


def _ok_row(path: str, seed: int, mtime_ns: int = 1_000) -> ShardRow:
    rng = np.random.default_rng(seed)
    clips = rng.standard_normal((2, DIM)).astype(np.float32)
    clips /= np.linalg.norm(clips, axis=1, keepdims=True)
    video = clips.mean(0) / np.linalg.norm(clips.mean(0))
    return ShardRow(path=path, size=100 + seed, mtime_ns=mtime_ns, status="ok", content_hash=f"sha256:{seed}",
                    info={"duration": 2.0, "fps": 10.0, "frames": 20, "width": 64, "height": 48, "backend": "pyav"},
                    windows=[(0.0, 0.8), (1.1, 1.9)], video_vector=video.astype(np.float32), clip_vectors=clips)


def _rows(odd_name: str = "/v/b.mp4"):
    bad = ShardRow(path="/v/bad.mp4", size=7, mtime_ns=5, status="failed", error_kind="corrupt",
                   error="no frame of the video stream could be decoded")
    return [_ok_row("/v/a.mp4", 1), bad, _ok_row(odd_name, 2)]


def _catalog(index_dir: Path) -> dict:
    index = VideoIndex.open(index_dir)
    try:
        out = {}
        for path, (size, mtime_ns, status) in index.known_files().items():
            vid = index.video_id(path)
            rec = index.video(vid)
            out[path] = (status, size, mtime_ns, rec.error_kind, rec.error,
                         [(c.start_sec, c.end_sec) for c in index.clips_of(vid)], index.clip_vectors(vid).tobytes())
        return out
    finally:
        index.close()


def test_a_shard_round_trips_rows_and_vectors_bit_exactly(tmp_path):
    rows = _rows(odd_name="/v/b\udcff.mp4")  # a non-UTF-8 file name survives the shard losslessly
    shard = write_shard(tmp_path, rows, META)
    back = list(read_rows(shard))
    assert [r.path for r in back] == [r.path for r in rows]
    for got, want in zip(back, rows):
        assert (got.status, got.error_kind, got.error, got.key, got.windows, got.info) == \
               (want.status, want.error_kind, want.error, want.key, want.windows, want.info)
        if want.clip_vectors is None:
            assert got.clip_vectors is None and got.video_vector is None
        else:
            assert got.clip_vectors.tobytes() == want.clip_vectors.tobytes()
            assert got.video_vector.tobytes() == want.video_vector.tobytes()
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file is renamed away"


def test_ingest_writes_the_shard_and_reingesting_adds_nothing(tmp_path):
    shard = write_shard(tmp_path / "shards", _rows(), META)
    first = ingest_shards(shard, tmp_path / "idx")
    assert (first.added, len(first.failed), first.skipped) == (2, 1, 0)
    assert first.failed[0].kind == "corrupt"
    before = _catalog(tmp_path / "idx")
    assert before["/v/a.mp4"][5] == [(0.0, 0.8), (1.1, 1.9)]
    assert before["/v/bad.mp4"][:5] == ("failed", 7, 5, "corrupt", "no frame of the video stream could be decoded")
    again = ingest_shards(tmp_path / "shards", tmp_path / "idx")
    assert (again.added, again.updated, len(again.failed), again.skipped, again.vectors) == (0, 0, 0, 3, 0)
    assert _catalog(tmp_path / "idx") == before
    index = VideoIndex.open(tmp_path / "idx")
    assert index.verify() == [] and index.info()["clips"] == 4
    index.close()


def test_a_newer_version_replaces_an_older_one_and_an_older_shard_is_stale(tmp_path):
    old = write_shard(tmp_path / "old", [_ok_row("/v/a.mp4", 1, mtime_ns=1_000)], META)
    new = write_shard(tmp_path / "new", [_ok_row("/v/a.mp4", 3, mtime_ns=2_000)], META)
    ingest_shards(old, tmp_path / "idx")
    assert ingest_shards(new, tmp_path / "idx").updated == 1
    report = ingest_shards(old, tmp_path / "idx")
    assert (report.stale, report.updated) == (1, 0)
    kept = np.frombuffer(_catalog(tmp_path / "idx")["/v/a.mp4"][6], np.float32).reshape(2, DIM)
    np.testing.assert_allclose(kept, _ok_row("/v/a.mp4", 3).clip_vectors, atol=1e-6)  # the index renormalises
    assert not np.allclose(kept, _ok_row("/v/a.mp4", 1).clip_vectors, atol=1e-3)


def test_a_damaged_shard_is_refused_whole_and_writes_nothing(tmp_path):
    good = write_shard(tmp_path / "good", [_ok_row("/v/c.mp4", 4)], META)
    ingest_shards(good, tmp_path / "idx")
    before = _catalog(tmp_path / "idx")
    shard = write_shard(tmp_path / "bad", _rows(), META)
    original = shard.read_bytes()
    want = [(r.path, r.status, r.windows, r.checksum()) for r in _rows()]
    refused, positions = 0, range(4, len(original), 11)
    for pos in positions:  # every 11th byte flipped in turn: refused, or the values intact
        data = bytearray(original)
        data[pos] ^= 0xFF
        shard.write_bytes(bytes(data))
        try:
            got = [(r.path, r.status, r.windows, r.checksum()) for r in read_rows(shard)]
        except ShardError:
            refused += 1
            continue
        assert got == want, f"a flipped byte at {pos} was read as different values"
    assert refused > len(positions) // 2  # most bytes are checked data; the rest (statistics, padding) change nothing
    vector_byte = original.index(_rows()[0].clip_vectors.tobytes()[:8])  # stored plain: compression cannot shrink noise
    data = bytearray(original)
    data[vector_byte + 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError):
        read_rows(shard)
    report = ingest_shards([good, shard], tmp_path / "idx")
    assert len(report.bad_shards) == 1 and "delete" in report.bad_shards[0]
    assert _catalog(tmp_path / "idx") == before


def test_a_shard_of_another_encoder_is_refused(tmp_path):
    write_shard(tmp_path / "a", [_ok_row("/v/a.mp4", 1)], META)
    other = ShardMeta("sha256:" + "cd" * 32, META.spec_json, DIM, ClipSampling.fixed(2))
    write_shard(tmp_path / "b", [_ok_row("/v/b.mp4", 2)], other)
    ingest_shards(tmp_path / "a", tmp_path / "idx")
    with pytest.raises(EncoderMismatch):
        ingest_shards(tmp_path / "b", tmp_path / "idx")
    report = ingest_shards([tmp_path / "a", tmp_path / "b"], tmp_path / "idx")
    assert (report.added, report.skipped) == (0, 1) and "encoder" in report.bad_shards[0]


def test_the_ingest_command_exits_non_zero_on_a_bad_shard(tmp_path):
    shard = write_shard(tmp_path / "s", _rows(), META)
    shard.write_bytes(shard.read_bytes()[:200])  # truncated
    out = subprocess.run([sys.executable, "-c", "from vcl_infer.cli.index import main; main()", "ingest",
                          str(tmp_path / "s"), "--index", str(tmp_path / "idx")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "no readable vector shards" in out.stderr


@pytest.mark.slow
def test_the_ray_stages_called_directly_give_the_local_builds_rows(tmp_path):
    """decode_batch + EncodeToShard without Ray (what each Ray task and actor runs): the same
    stride windows, failures and bit-identical vectors as a local build of the same files."""
    import pyarrow as pa
    from video_fixtures import make_video

    from vcl_infer.distributed.stages import EncodeToShard, decode_batch
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.embedder import default_bundle
    from vcl_infer.index.build import build_index

    folder = tmp_path / "v"
    folder.mkdir()
    make_video(folder / "a.mp4", num_frames=30)
    (folder / "b.mp4").write_text("not a video")
    build_index(folder, tmp_path / "local", clip_every=0.5, min_clips=2, workers=1, progress=False)
    rule = ClipSampling(every_sec=0.5, min_clips=2)
    files = sorted(str(p) for p in folder.iterdir())
    batch = pa.table({"path_bytes": [f.encode() for f in files],
                      "size": [Path(f).stat().st_size for f in files],
                      "mtime_ns": [Path(f).stat().st_mtime_ns for f in files]})
    spec = load_bundle_spec(default_bundle())
    decoded = pa.concat_tables(decode_batch(batch, spec=spec.clip, clips=rule, timeout_s=60))
    meta = ShardMeta(spec.fingerprint, spec.to_json(), spec.embed_dim, rule)
    out = EncodeToShard(str(default_bundle()), str(tmp_path / "shards"), meta)(decoded)
    ingest_shards(out.column("shard")[0].as_py(), tmp_path / "ray")
    local, distributed = _catalog(tmp_path / "local"), _catalog(tmp_path / "ray")
    assert local == distributed  # status, size, mtime, error kind and reason, windows, vector bytes
    assert local[files[0]][0] == "ok" and local[files[1]][0] == "failed"
    assert len(local[files[0]][-2]) > rule.min_clips  # cut by the stride, not the floor


def test_ingest_records_the_shards_clip_count_and_refuses_an_index_cut_another_way(tmp_path):
    from vcl_infer.clips.sampling_record import read_sampling
    from vcl_infer.errors import VclError

    write_shard(tmp_path / "a", [_ok_row("/v/a.mp4", 1)], META)
    ingest_shards(tmp_path / "a", tmp_path / "idx")
    assert read_sampling(tmp_path / "idx") == ClipSampling.fixed(META.clips_per_video)
    three = ShardMeta(META.fingerprint, META.spec_json, DIM, ClipSampling.fixed(3))
    write_shard(tmp_path / "b", [_ok_row("/v/b.mp4", 2)], three)
    with pytest.raises(VclError, match="2 clips per video"):
        ingest_shards(tmp_path / "b", tmp_path / "idx")
    assert "/v/b.mp4" not in _catalog(tmp_path / "idx")


def test_a_stride_rule_travels_in_the_shard_and_a_shard_cut_another_way_writes_nothing(tmp_path):
    from vcl_infer.clips.sampling_record import read_sampling

    stride = ShardMeta(META.fingerprint, META.spec_json, DIM, ClipSampling(every_sec=2.0, min_clips=2, max_clips=50))
    a = write_shard(tmp_path / "a", [_ok_row("/v/a.mp4", 1)], stride)
    b = write_shard(tmp_path / "b", [_ok_row("/v/b.mp4", 2)], META)  # a fixed count of 2
    report = ingest_shards([a, b], tmp_path / "idx")
    assert read_sampling(tmp_path / "idx") == stride.sampling
    assert report.added == 1 and len(report.bad_shards) == 1 and "2 clips per video" in report.bad_shards[0]
    assert sorted(_catalog(tmp_path / "idx")) == ["/v/a.mp4"]


def test_a_shard_written_before_the_sampling_record_reads_as_its_fixed_count(tmp_path):
    import pyarrow.parquet as pq

    from vcl_infer.distributed.shards import read_meta

    shard = write_shard(tmp_path / "s", [_ok_row("/v/a.mp4", 1)], ShardMeta(META.fingerprint, META.spec_json, DIM,
                                                                             ClipSampling.fixed(5)))
    table = pq.read_table(shard)
    old = {k: v for k, v in table.schema.metadata.items() if k != b"vcl.sampling"}
    pq.write_table(table.replace_schema_metadata(old), shard)
    assert read_meta(shard).sampling == ClipSampling.fixed(5)
