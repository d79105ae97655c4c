"""The video index: round trips, persistence, removal, corruption, stale files, locking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vcl_infer.index import (
    EncoderMismatch,
    IndexCorrupt,
    IndexExists,
    IndexLocked,
    VideoIndex,
    choose_factory,
)

DIM = 16
FP = "f" * 64
SPEC = json.dumps({"arch": "r3d18", "embed_dim": DIM})


def _unit(rng, n, d=DIM):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(ix, rng, names, n_clips=3):
    """Add videos; returns {path: (video_vector, clip_vectors, windows)}."""
    out = {}
    for name in names:
        cv = _unit(rng, n_clips)
        vv = cv.mean(0)
        vv /= np.linalg.norm(vv)
        windows = [(2.0 * j, 2.0 * j + 1.6) for j in range(n_clips)]
        ix.add_video(
            name,
            size=100,
            mtime_ns=7,
            content_hash="h-" + name,
            info={
                "fps": 25.0,
                "duration": 6.0,
                "frames": 150,
                "width": 320,
                "height": 240,
                "backend": "decord",
            },
            video_vector=vv,
            clip_vectors=cv,
            windows=windows,
        )
        out[name] = (vv, cv, windows)
    return out


@pytest.fixture()
def built(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "ix"
    with VideoIndex.create(path, fingerprint=FP, spec_json=SPEC, dim=DIM) as ix:
        data = _fill(ix, rng, [f"/v/{i:02d}.mp4" for i in range(12)])
        ix.add_failure("/v/bad.mp4", size=5, mtime_ns=1, error_kind="corrupt", error="no frame decoded")
    return path, data


def test_import_does_not_load_faiss():
    code = "import sys, vcl_infer.index; assert 'faiss' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_round_trip_and_persistence(built):
    path, data = built
    with VideoIndex.open(path, fingerprint=FP) as ix:
        info = ix.info()
        assert (info["videos_ok"], info["videos_failed"], info["clips"]) == (12, 1, 36)
        assert info["arch"] == "r3d18" and info["dim"] == DIM and info["index_types"]["clip"] == "Flat"
        assert ix.verify() == []
        names = sorted(data)
        # each video's own pooled vector finds that video first, each clip vector its clip
        q = np.stack([data[n][0] for n in names])
        scores, ids = ix.search(q, 3, level="video")
        assert scores.shape == ids.shape == (12, 3) and ids.dtype == np.int64 and scores.dtype == np.float32
        assert [ix.video(i).path for i in ids[:, 0]] == names
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
        for name in names[:4]:
            vv, cv, windows = data[name]
            _, cids = ix.search(cv, 1, level="clip")
            recs = [ix.clip(c) for c in cids[:, 0]]
            assert [r.path for r in recs] == [name] * 3
            np.testing.assert_allclose([(r.start_sec, r.end_sec) for r in recs], windows)
            vid = recs[0].video_id
            assert [c.id for c in ix.clips_of(vid)] == list(cids[:, 0])
            np.testing.assert_allclose(ix.clip_vectors(vid), cv, atol=1e-6)
            rec = ix.video(vid)
            assert (rec.status, rec.num_clips, rec.fps, rec.backend, rec.content_hash) == (
                "ok",
                3,
                25.0,
                "decord",
                "h-" + name,
            )
        # k larger than the index: -1 padded
        s, i = ix.search(q[:1], 20, level="video")
        assert (i[0, 12:] == -1).all() and np.isneginf(s[0, 12:]).all()
        known = ix.known_files()
        assert known["/v/bad.mp4"] == (5, 1, "failed") and known["/v/00.mp4"] == (100, 7, "ok")
        (fail,) = ix.failures()
        assert (fail.path, fail.error_kind, fail.status) == ("/v/bad.mp4", "corrupt", "failed")


def test_replace_remove_and_failures(built):
    path, data = built
    rng = np.random.default_rng(1)
    with VideoIndex.open(path, writable=True, fingerprint=FP) as ix:
        old_vid = ix.search(data["/v/03.mp4"][0][None], 1)[1][0, 0]
        old_clips = {c.id for c in ix.clips_of(old_vid)}
        removed_vid = ix.search(data["/v/05.mp4"][0][None], 1)[1][0, 0]
        assert ix.remove(["/v/05.mp4", "/v/does-not-exist.mp4"]) == 1
        new = _fill(ix, rng, ["/v/03.mp4"], n_clips=2)  # replaces the row, new vectors
        ix.add_failure("/v/07.mp4", size=1, mtime_ns=2, error_kind="timeout", error="took too long")
        ix.commit()
        assert ix.verify() == []
    with VideoIndex.open(path) as ix:
        assert ix.verify() == []
        info = ix.info()
        assert (info["videos_ok"], info["videos_failed"], info["clips"]) == (10, 2, 3 * 9 + 2)
        all_q = _unit(rng, 50)
        _, vids = ix.search(all_q, 12, level="video")
        _, cids = ix.search(all_q, 40, level="clip")
        assert removed_vid not in vids and old_vid not in vids
        assert not (old_clips & set(cids.ravel().tolist()))
        valid = vids[vids >= 0]
        assert len(valid) == 50 * 10  # exactly the 10 ok videos
        assert {ix.video(v).path for v in valid} == set(data) - {"/v/05.mp4", "/v/07.mp4"}
        _, top = ix.search(new["/v/03.mp4"][0][None], 1)
        assert ix.video(top[0, 0]).path == "/v/03.mp4" and ix.video(top[0, 0]).num_clips == 2
        assert {f.path for f in ix.failures()} == {"/v/bad.mp4", "/v/07.mp4"}


def test_flipped_byte_detected_and_repaired(built):
    path, data = built
    q = np.stack([v[1][0] for v in data.values()])
    with VideoIndex.open(path) as ix:
        before = ix.search(q, 5, level="clip")
    f = path / "clips.faiss"
    raw = bytearray(f.read_bytes())
    pos = len(raw) // 2  # inside the vector payload of a Flat IndexIDMap2
    raw[pos] ^= 0x40
    f.write_bytes(bytes(raw))
    import faiss  # faiss itself loads the damaged file without complaint

    assert faiss.deserialize_index(np.frombuffer(bytes(raw), np.uint8)).ntotal == 36
    for writable in (False, True):
        with pytest.raises(IndexCorrupt, match=r"clips\.faiss.*checksum.*vcl-index repair"):
            VideoIndex.open(path, writable=writable)
    with VideoIndex.open(path, writable=True, repair=True) as ix:
        ix.repair()
        assert ix.verify() == []
    with VideoIndex.open(path) as ix:
        after = ix.search(q, 5, level="clip")
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], atol=1e-6)


def test_stale_file_after_crash_between_steps(built, monkeypatch):
    path, data = built
    rng = np.random.default_rng(2)
    ix = VideoIndex.open(path, writable=True)

    class Crash(BaseException):
        pass

    def crash(*a, **k):
        raise Crash

    new = _fill(ix, rng, ["/v/new.mp4"])
    monkeypatch.setattr(ix.files, "publish", crash)  # dies after the catalog commit, before the files
    with pytest.raises(Crash):
        ix.commit()
    ix.close()
    with pytest.raises(IndexCorrupt, match=r"older than the catalog.*vcl-index repair"):
        VideoIndex.open(path)
    with VideoIndex.open(path, writable=True) as ix:  # rebuilt from the catalog
        assert ix.verify() == []
    with VideoIndex.open(path) as ix:
        assert ix.info()["videos_ok"] == 13
        _, top = ix.search(new["/v/new.mp4"][0][None], 1)
        assert ix.video(top[0, 0]).path == "/v/new.mp4"


def test_encoder_mismatch_and_create_guards(built, tmp_path):
    path, _ = built
    with pytest.raises(EncoderMismatch, match="same model"):
        VideoIndex.open(path, fingerprint="0" * 64)
    with pytest.raises(EncoderMismatch):
        VideoIndex.open_or_create(path, fingerprint="0" * 64, spec_json=SPEC, dim=DIM)
    with pytest.raises(EncoderMismatch, match="16-d"):
        VideoIndex.open_or_create(path, fingerprint=FP, spec_json=SPEC, dim=32)
    with pytest.raises(IndexExists, match="not empty"):
        VideoIndex.create(path, fingerprint=FP, spec_json=SPEC, dim=DIM)
    with pytest.raises(ValueError, match="invalid FAISS index type"):
        VideoIndex.create(tmp_path / "new", fingerprint=FP, spec_json=SPEC, dim=DIM, index_type="IVFzz")
    with VideoIndex.open_or_create(tmp_path / "new2", fingerprint=FP, spec_json=SPEC, dim=DIM) as ix:
        assert ix.info()["videos_ok"] == 0
        s, i = ix.search(np.ones((2, DIM), np.float32), 3)
        assert (i == -1).all()
    with VideoIndex.open(path, writable=True) as ix, pytest.raises(Exception, match="dim"):
        ix.add_video(
            "/x.mp4",
            size=1,
            mtime_ns=1,
            content_hash="",
            info={},
            video_vector=np.ones(8),
            clip_vectors=np.ones((1, 8)),
            windows=[(0, 1)],
        )


def test_lock_second_writer_in_other_process(built):
    path, data = built
    q = data["/v/00.mp4"][0].tolist()
    child = textwrap.dedent(f"""
        import numpy as np
        from vcl_infer.index import VideoIndex, IndexLocked
        try:
            VideoIndex.open({str(path)!r}, writable=True)
            print("NOT LOCKED")
        except IndexLocked as e:
            print("LOCKED", e)
        with VideoIndex.open({str(path)!r}) as r:
            print("READ", r.video(r.search(np.array([{q}], np.float32), 1)[1][0, 0]).path)
    """)
    with VideoIndex.open(path, writable=True):
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("LOCKED") and f"process {os.getpid()}" in out.stdout, out.stdout
    assert "READ /v/00.mp4" in out.stdout
    # after the writer closed, the lock is free again; in-process double writers are refused too
    with VideoIndex.open(path, writable=True):
        with pytest.raises(IndexLocked):
            VideoIndex.open(path, writable=True)


def test_ivf_index_type_trains_when_large_enough(tmp_path):
    """A requested IVF type starts as exact Flat, switches to IVF once trainable, keeps ids."""
    rng = np.random.default_rng(3)
    path = tmp_path / "ivf"
    with VideoIndex.create(path, fingerprint=FP, spec_json=SPEC, dim=DIM, index_type="IVF8,Flat") as ix:
        _fill(ix, rng, [f"/a/{i}.mp4" for i in range(10)], n_clips=20)
        ix.commit()
        assert ix.info()["index_types"]["clip"] == "Flat"  # 200 < 39 * 8
        _fill(ix, rng, [f"/b/{i}.mp4" for i in range(10)], n_clips=20)
        ix.commit()
        info = ix.info()  # nprobe tuned to the target recall (at most every list)
        assert info["index_types"]["clip"] == "IVF8,Flat" and 1 <= info["nprobe"]["clip"] <= 8
        assert info["recall_at_10"]["clip"] >= info["target_recall"]
        ix.remove(["/a/0.mp4"])
        ix.commit()
        assert ix.verify() == []
    with VideoIndex.open(path) as ix:
        q = _unit(rng, 20)
        s_all, i_all = ix.search(q, 5, level="clip", nprobe=8)  # nprobe 8 = every list: exact
        cv = np.concatenate([ix.clip_vectors(v) for v in range(1, 21) if v != 1])
        ids = np.concatenate([[c.id for c in ix.clips_of(v)] for v in range(2, 21)])
        exact = ids[np.argsort(-(q @ cv.T), axis=1)[:, :5]]
        np.testing.assert_array_equal(i_all, exact)


@pytest.mark.parametrize(
    "n,dim,memory_gb,expect",
    [
        (0, 512, 64, "Flat"),
        (49_999, 512, 64, "Flat"),
        (50_000, 512, 64, "IVF2048,Flat"),
        (1_000_000, 512, 64, "IVF8192,Flat"),
        (3_000_000, 512, 64, "IVF16384,Flat"),
        (10_000_000, 512, 64, "IVF32768,PQ128"),  # more than 3M: IVF-PQ
        (10_000_000, 100, 64, "IVF32768,PQ25"),
        (1_000_000, 512, 1, "IVF8192,PQ128"),  # 2 GB of vectors over a 1 GB budget: IVF-PQ
        (100_000_000, 512, 4, "IVF65536,PQ32"),  # the codes themselves shrink to fit
    ],
)
def test_choose_factory(n, dim, memory_gb, expect):
    assert choose_factory(n, dim, memory_bytes=memory_gb * 2**30) == expect
