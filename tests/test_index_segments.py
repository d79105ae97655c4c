"""The LSM-style layout: a base plus delta segments per commit, tombstones, merges, compaction,
deferred checks of memory-mapped segments, and indexes written before segments."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from vcl_infer.index import IndexCorrupt, VideoIndex
from vcl_infer.index import faiss_ops as F
from vcl_infer.index import files as files_mod
from vcl_infer.index import grouped_search as grouped_mod
from vcl_infer.index import segments as seg_mod

DIM = 16
FP = "c" * 64


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _add(ix, rng, name, n_clips=3):
    cv = _unit(rng, n_clips)
    ix.add_video(name, size=1, mtime_ns=1, content_hash="", info={}, video_vector=cv.mean(0), clip_vectors=cv,
                 windows=[(j, j + 1) for j in range(n_clips)])


def _catalog_vectors(ix, level):
    ids, vecs = ix.catalog.vectors(level)
    return ids, vecs


def _exact(ix, level, q, k):
    ids, vecs = _catalog_vectors(ix, level)
    order = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :k]
    return ids[order]


def _churn(ix, rng, rounds, start=0):
    """Commits that add, replace and remove videos: every commit a delta segment and tombstones."""
    for r in range(rounds):
        for i in range(3):
            _add(ix, rng, f"/v/{start + r * 3 + i}.mp4")
        if r % 2:
            _add(ix, rng, f"/v/{start + (r - 1) * 3}.mp4")  # replaced: its old ids become tombstones
            ix.remove([f"/v/{start + (r - 1) * 3 + 1}.mp4"])
        ix.commit()
    ix.remove([f"/v/{start + 2}.mp4"])  # a commit without adds: no delta, no merge, one more tombstone
    ix.commit()


def test_segmented_search_equals_exact_search_over_the_catalog(tmp_path):
    rng = np.random.default_rng(0)
    ix = VideoIndex.create(tmp_path / "ix", fingerprint=FP, spec_json="{}", dim=DIM)
    _churn(ix, rng, 12)
    layout = ix.files.layout("clip")
    assert layout.deltas and ix.files.loaded["clip"].tombstones.size  # really segmented, with tombstones
    q = _unit(rng, 40)
    with VideoIndex.open(tmp_path / "ix") as reader:  # another process's view of the same state
        for level in ("clip", "video"):
            k = 10
            _, got = reader.search(q, k, level=level)
            np.testing.assert_array_equal(got, _exact(ix, level, q, k))
            assert reader.verify() == []
    ix.close()


def test_a_commit_writes_only_its_batch(tmp_path):
    rng = np.random.default_rng(1)
    with VideoIndex.create(tmp_path / "ix", fingerprint=FP, spec_json="{}", dim=DIM) as ix:
        for i in range(200):
            _add(ix, rng, f"/base/{i}.mp4")
    ix = VideoIndex.open(tmp_path / "ix", writable=True)  # closed above: compacted into one base
    base = tmp_path / "ix" / "clips.faiss"
    before = os.stat(base)
    assert ix.files.layout("clip").deltas == []
    _add(ix, rng, "/new/0.mp4")
    ix.commit()
    after = os.stat(base)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the base untouched
    (delta,) = ix.files.layout("clip").deltas
    assert delta.count == 3 and delta.size < before.st_size / 20
    ix.close()


def test_deltas_merge_in_tiers_and_compact_into_the_base(tmp_path, monkeypatch):
    monkeypatch.setattr(files_mod, "CLOSE_COMPACT_BYTES", 0)  # keep the deltas at close
    rng = np.random.default_rng(2)
    ix = VideoIndex.create(tmp_path / "ix", fingerprint=FP, spec_json="{}", dim=DIM)
    _churn(ix, rng, 40)
    layout = ix.files.layout("clip")
    tiers = [s.tier for s in layout.deltas]
    assert max(tiers) >= 2 and len(tiers) < 12 and tiers == sorted(tiers, reverse=True)
    q = _unit(rng, 20)
    np.testing.assert_array_equal(ix.search(q, 8, level="clip")[1], _exact(ix, "clip", q, 8))
    ix.compact()
    assert ix.files.layout("clip").deltas == [] and ix.files.loaded["clip"].tombstones.size == 0
    assert ix.catalog.db.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0] == 0
    names = sorted(p.name for p in (tmp_path / "ix").glob("*.faiss"))
    assert names == ["clips.faiss", "videos.faiss"]  # merged and compacted files deleted
    np.testing.assert_array_equal(ix.search(q, 8, level="clip")[1], _exact(ix, "clip", q, 8))
    ix.close()


def test_ivf_segments_answer_as_one_ivf_file(tmp_path, monkeypatch):
    monkeypatch.setattr(files_mod, "CLOSE_COMPACT_BYTES", 0)
    rng = np.random.default_rng(3)
    ix = VideoIndex.create(tmp_path / "ix", fingerprint=FP, spec_json="{}", dim=DIM, index_type="IVF16,Flat")
    for i in range(300):
        _add(ix, rng, f"/a/{i}.mp4")
    ix.commit()
    assert ix.catalog.meta["clip.factory"] == "IVF16,Flat"
    _churn(ix, rng, 10, start=1000)
    layout = ix.files.layout("clip")
    assert len(layout.deltas) > 1 and ix.files.loaded["clip"].tombstones.size
    # deltas and the template are written without the centroids (the base holds them): a commit
    # writes only its batch, however many lists the index has
    stored = {s.file: F.deserialize((tmp_path / "ix" / s.file).read_bytes()) for s in layout.files()}
    assert [name for name, index in stored.items() if F.has_centroids(index)] == ["clips.faiss"]
    ids, vecs = _catalog_vectors(ix, "clip")
    one = F.add_all(ix.files._templates["clip"].trained(), ids, vecs)  # one file, same centroids
    q = _unit(rng, 50)
    monkeypatch.setattr(seg_mod, "EAGER_BYTES", 0)  # the reader maps every segment's inverted lists
    monkeypatch.setattr(grouped_mod, "SHARED_WORK", 0.0)  # every batch this size answered list by list
    grouped = []  # so the grouped search is what answers it, not FAISS
    real_grouped = grouped_mod.grouped_search
    monkeypatch.setattr(grouped_mod, "grouped_search", lambda *a, **kw: grouped.append(1) or real_grouped(*a, **kw))
    with VideoIndex.open(tmp_path / "ix") as reader:
        assert not reader.files.loaded["clip"].segments[0].checked
        for nprobe in (1, 3):
            one.nprobe = nprobe
            want_s, want = one.search(q, 10)
            for searcher in (ix, reader):
                got_s, got = searcher.search(q, 10, level="clip", nprobe=nprobe)
                np.testing.assert_array_equal(got, want)
                np.testing.assert_allclose(got_s, want_s, atol=1e-6)
    assert len(grouped) == 4
    ix.close()


def test_a_flipped_byte_in_a_mapped_segment_is_never_answered(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    with VideoIndex.create(tmp_path / "ix", fingerprint=FP, spec_json="{}", dim=DIM) as ix:
        for i in range(50):
            _add(ix, rng, f"/v/{i}.mp4")
        target = ix.clip_vectors(ix.video_id("/v/7.mp4"))[1]
    monkeypatch.setattr(seg_mod, "EAGER_BYTES", 0)  # every segment memory-mapped, checked lazily
    base = tmp_path / "ix" / "clips.faiss"
    st = os.stat(base)
    raw = bytearray(base.read_bytes())
    pos = bytes(raw).find(target.astype("<f4").tobytes())
    assert pos > 0
    raw[pos + 5] ^= 0x08
    base.write_bytes(bytes(raw))
    os.utime(base, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot: same file, same time stamp
    ix = VideoIndex.open(tmp_path / "ix")  # opens: nothing read but the header
    assert not ix.files.loaded["clip"].segments[0].checked
    with pytest.raises(IndexCorrupt, match=r"clips\.faiss.*checksum.*vcl-index repair"):
        ix.search(target, 3, level="clip")
    assert any("checksum" in p for p in ix.verify())
    ix.close()
    with VideoIndex.open(tmp_path / "ix", writable=True, repair=True):
        pass
    with VideoIndex.open(tmp_path / "ix") as ix:
        _, top = ix.search(target, 1, level="clip")
        assert ix.clip(top[0, 0]).video_id == ix.video_id("/v/7.mp4")


def test_an_index_written_before_segments_opens_and_is_migrated(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "ix"
    with VideoIndex.create(path, fingerprint=FP, spec_json="{}", dim=DIM) as ix:
        for i in range(30):
            _add(ix, rng, f"/v/{i}.mp4")
    q = _unit(rng, 10)
    with VideoIndex.open(path) as ix:
        want = [ix.search(q, 5, level=lv)[1] for lv in ("clip", "video")]
    # the one-file layout: whole files recorded by sha256, no segment list
    db = sqlite3.connect(path / "catalog.sqlite")
    for level, name in (("clip", "clips.faiss"), ("video", "videos.faiss")):
        layout = json.loads(db.execute("SELECT value FROM meta WHERE key = ?", (f"{level}.segments",)).fetchone()[0])
        assert layout["deltas"] == [] and layout["template"] is None
        db.execute("DELETE FROM meta WHERE key = ?", (f"{level}.segments",))
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (F.sha256((path / name).read_bytes()), f"{level}.sha256"))
    db.execute("DROP TABLE tombstones")
    db.commit()
    db.close()
    with VideoIndex.open(path) as ix:  # read as a base only
        assert [ix.search(q, 5, level=lv)[1].tolist() for lv in ("clip", "video")] == [w.tolist() for w in want]
        assert ix.verify() == []
    with VideoIndex.open(path, writable=True) as ix:  # migrated to segments on the first writable open
        assert ix.files.layout("clip") is not None
        _add(ix, rng, "/v/new.mp4")
    with VideoIndex.open(path) as ix:
        assert ix.verify() == [] and ix.info()["videos_ok"] == 31
        assert ix.search(q, 5, level="video")[1].tolist() != []


def test_a_mapped_ivf_base_is_checked_one_probed_list_at_a_time(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    with VideoIndex.create(tmp_path / "ix", fingerprint=FP, spec_json="{}", dim=DIM, index_type="IVF16,Flat") as ix:
        for i in range(300):
            _add(ix, rng, f"/v/{i}.mp4")
        vectors = np.concatenate([ix.clip_vectors(ix.video_id(f"/v/{i}.mp4")) for i in range(300)])
    monkeypatch.setattr(seg_mod, "EAGER_BYTES", 0)
    base = tmp_path / "ix" / "clips.faiss"
    st = os.stat(base)
    raw = bytearray(base.read_bytes())
    target = vectors[5]
    pos = bytes(raw).find(target.astype("<f4").tobytes())
    assert pos > 0
    raw[pos + 2] ^= 0x01
    base.write_bytes(bytes(raw))
    os.utime(base, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot
    with VideoIndex.open(tmp_path / "ix") as reader:
        seg = reader.files.loaded["clip"].segments[0]
        assert seg.per_list  # mapped, header checked, lists not yet
        quantizer = F.faiss_module().extract_index_ivf(seg.index).quantizer
        lists = quantizer.search(vectors, 1)[1][:, 0]
        other = vectors[np.flatnonzero(lists != lists[5])[0]]
        _, top = reader.search(other, 3, level="clip", nprobe=1)  # probes an intact list: answered
        assert top[0, 0] >= 0 and not seg.checked
        with pytest.raises(IndexCorrupt, match=r"clips\.faiss.*inverted list.*vcl-index repair"):
            reader.search(target, 3, level="clip", nprobe=1)  # probes the damaged one: never answered
        with pytest.raises(IndexCorrupt, match=r"clips\.faiss.*inverted list"):  # nor in a batch
            reader.search(np.stack([other] * 40 + [target]), 3, level="clip", nprobe=1)
        assert any("checksum" in p for p in reader.verify())
