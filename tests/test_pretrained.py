"""Published encoders by name: registry, verified resumable download, cache, one-time conversion.

Everything runs against a loopback HTTP server (tests/loopback_http.py) serving generated
checkpoints; a test registry entry is injected with VCL_REGISTRY. Nothing touches the internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from loopback_http import LoopbackServer, closed_port_url

from vcl_infer.encode.pretrained import (
    DownloadError,
    HashMismatch,
    PinError,
    RegistryError,
    describe_published,
    fetch_checkpoint,
    get_entry,
    load_registry,
    resolve_model,
)
from vcl_infer.encode.pretrained.download import download_verified
from vcl_infer.errors import MissingDependency

ROOT = Path(__file__).resolve().parents[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    with LoopbackServer() as running:
        yield running


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VCL_CACHE", str(root))
    return root


def write_registry(tmp_path, monkeypatch, entries: dict) -> Path:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("VCL_REGISTRY", str(path))
    return path


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock"
                  and not p.name.endswith(".lock")) if root.exists() else []


# ---------------------------------------------------------------- download


def test_an_interrupted_download_is_kept_as_a_part_and_resumed_with_a_range_request(server, tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    server.state.files["/w.pt"] = data
    server.state.cut_after = 100_000  # every response drops after 100 kB
    dest = tmp_path / "dl" / "w.pt"
    with pytest.raises(DownloadError, match=r"200000 bytes are kept in .*w\.pt\.part.*resumes") as info:
        download_verified(server.url("/w.pt"), sha(data), dest, attempts=2, retry_wait_s=0)
    assert "ended after 200000 of 300000 bytes" in str(info.value)
    assert not dest.exists() and dest.with_name("w.pt.part").stat().st_size == 200_000
    assert [r["range"] for r in server.state.requests] == [None, "bytes=100000-"]

    server.state.cut_after = None  # the network is back: the next run asks only for the rest
    assert download_verified(server.url("/w.pt"), sha(data), dest, retry_wait_s=0) == dest
    assert dest.read_bytes() == data and not dest.with_name("w.pt.part").exists()
    assert server.state.requests[-1]["range"] == "bytes=200000-" and server.state.requests[-1]["sent"] == 100_000


def test_a_server_that_ignores_range_restarts_the_file_instead_of_appending(server, tmp_path):
    data = bytes(range(256)) * 1000
    server.state.files["/w.pt"] = data
    server.state.honour_range = False
    dest = tmp_path / "w.pt"
    dest.with_name("w.pt.part").write_bytes(data[:5000])
    download_verified(server.url("/w.pt"), sha(data), dest, retry_wait_s=0)
    assert dest.read_bytes() == data


def test_a_wrong_hash_keeps_nothing(server, tmp_path):
    server.state.files["/w.pt"] = b"not the weights you are looking for" * 100
    dest = tmp_path / "dl" / "w.pt"
    with pytest.raises(HashMismatch, match="does not match the expected sha256"):
        download_verified(server.url("/w.pt"), "ab" * 32, dest, retry_wait_s=0)
    assert files_under(tmp_path / "dl") == []


def test_no_server_is_a_clear_error_and_writes_nothing(tmp_path):
    dest = tmp_path / "dl" / "w.pt"
    with pytest.raises(DownloadError, match="could not download .* Check the network"):
        download_verified(closed_port_url(), "ab" * 32, dest, attempts=2, retry_wait_s=0)
    assert files_under(tmp_path / "dl") == []


def test_a_web_page_instead_of_the_file_is_refused(server, tmp_path):
    server.state.files["/w.pt"] = b"<html>Google Drive can't scan this file for viruses</html>"
    server.state.content_type = "text/html"
    with pytest.raises(DownloadError, match="web page"):
        download_verified(server.url("/w.pt"), "ab" * 32, tmp_path / "w.pt", retry_wait_s=0)
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------- registry


def test_builtin_entries_name_real_published_files_and_how_each_is_verified(cache, monkeypatch):
    monkeypatch.delenv("VCL_REGISTRY", raising=False)
    entries = load_registry()
    r3d, r2p1d = entries["r3d_18-k400"], entries["r2plus1d_18-k400"]
    assert r3d.url == "https://download.pytorch.org/models/r3d_18-b3b3357e.pth" and r3d.sha256_prefix == "b3b3357e"
    assert r2p1d.url == "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth"
    assert r2p1d.sha256_prefix == "91a641e6" and "torchvision" in r2p1d.sha256_source
    assert all(e.licence and e.format in ("torchvision", "tclr") for e in entries.values())
    listing = describe_published()
    assert "prefix 91a641e6" in listing["r2plus1d_18-k400"] and "trust on first use" in listing["r2plus1d_18-k400"]
    # TCLR publishes no checksum at all: refused before any request, and the error says how to pin one
    assert "refused" in listing["tclr-r3d_18-k400"]
    with pytest.raises(RegistryError, match=r"no sha256 to verify.*publish no checksum.*VCL_REGISTRY"):
        resolve_model("tclr-r3d_18-k400")
    assert not cache.exists()


def test_a_prefix_entry_must_state_its_source_and_have_at_least_8_hex(tmp_path, monkeypatch):
    base = {"url": "https://example.org/w.pth", "format": "vcl", "arch": "r3d_small", "licence": "test"}
    write_registry(tmp_path, monkeypatch, {"x": {**base, "sha256_prefix": "abcdef12"}})
    with pytest.raises(RegistryError, match="sha256_source"):
        load_registry()
    write_registry(tmp_path, monkeypatch, {"x": {**base, "sha256_prefix": "abcdef1", "sha256_source": "file name"}})
    with pytest.raises(RegistryError, match="8 to 64"):
        load_registry()


def prefix_entry(server, tmp_path, monkeypatch, data: bytes, prefix: str | None = None):
    server.state.files["/w-pfx.pth"] = data
    write_registry(tmp_path, monkeypatch, {"pfx": {
        "url": server.url("/w-pfx.pth"), "sha256_prefix": prefix or sha(data)[:8],
        "sha256_source": "the test server's file name", "format": "vcl", "arch": "r3d_small", "licence": "test"}})
    return get_entry("pfx")


def test_a_prefix_entry_downloads_checks_the_prefix_and_pins_the_full_sha256(server, cache, tmp_path, monkeypatch):
    data = b"published weights" * 5000
    entry = prefix_entry(server, tmp_path, monkeypatch, data)
    assert "trust on first use" in describe_published()["pfx"]
    path = fetch_checkpoint(entry)
    assert path.read_bytes() == data
    pin = json.loads(path.with_name(path.name + ".sha256.json").read_text())
    assert pin["sha256"] == hashlib.sha256(data).hexdigest() and pin["url"] == entry.url
    assert f"{sha(data)[:12]}... pinned on first download" in describe_published()["pfx"]
    requests = len(server.state.requests)
    assert fetch_checkpoint(entry) == path and len(server.state.requests) == requests  # cached, no request


def test_a_file_whose_sha256_does_not_start_with_the_prefix_is_refused_and_nothing_is_left(
        server, cache, tmp_path, monkeypatch):
    data = b"something else" * 5000
    wrong = format(int(sha(data)[:8], 16) ^ 1, "08x")
    entry = prefix_entry(server, tmp_path, monkeypatch, data, prefix=wrong)
    with pytest.raises(HashMismatch, match=f"does not match the publisher's sha256 prefix {wrong}"):
        fetch_checkpoint(entry)
    assert files_under(cache) == []


def test_after_the_first_download_a_tampered_file_is_refused_by_the_full_pin(server, cache, tmp_path, monkeypatch):
    data = b"published weights" * 5000
    entry = prefix_entry(server, tmp_path, monkeypatch, data)
    path = fetch_checkpoint(entry)
    # simulate a forged file that shares the 8-digit prefix (2**32 work for an attacker, too slow for a test)
    monkeypatch.setattr("vcl_infer.encode.pretrained.download.matches_published_prefix", lambda digest, prefix: True)
    forged = b"forged weights!!!" * 5000
    path.write_bytes(forged)
    server.state.files["/w-pfx.pth"] = forged  # the re-download is forged too
    with pytest.raises(HashMismatch, match="pinned on first download"):
        fetch_checkpoint(entry)
    assert files_under(cache) == [f"checkpoints/prefix-{sha(data)[:8]}/w-pfx.pth.sha256.json"]  # the pin stays
    server.state.files["/w-pfx.pth"] = data  # the genuine file is accepted again
    assert fetch_checkpoint(entry).read_bytes() == data


def test_the_pin_file_is_written_atomically(server, cache, tmp_path, monkeypatch):
    data = b"published weights" * 5000
    entry = prefix_entry(server, tmp_path, monkeypatch, data)
    real_replace = os.replace
    seen = []

    def crash_when_pinning(src, dst):
        if str(dst).endswith(".sha256.json"):
            seen.append(json.loads(Path(src).read_text())["sha256"])  # the temp file is already whole
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_when_pinning)
    with pytest.raises(PinError, match="could not write the sha256 pin.*not used"):
        fetch_checkpoint(entry)
    assert seen == [sha(data)]
    folder = cache / "checkpoints" / f"prefix-{sha(data)[:8]}"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith("lock")) == ["w-pfx.pth.part"]
    monkeypatch.setattr(os, "replace", real_replace)
    assert fetch_checkpoint(entry).read_bytes() == data  # the next run pins and keeps it
    assert (folder / "w-pfx.pth.sha256.json").is_file()


def test_a_damaged_pin_is_refused_not_silently_replaced(server, cache, tmp_path, monkeypatch):
    data = b"published weights" * 5000
    entry = prefix_entry(server, tmp_path, monkeypatch, data)
    path = fetch_checkpoint(entry)
    pin = path.with_name(path.name + ".sha256.json")
    pin.write_text('{"format": "vcl-sha256-pin/1", "sha2')
    with pytest.raises(PinError, match="delete it to download and pin again"):
        fetch_checkpoint(entry)


def test_a_registry_file_pins_a_builtin_hash_and_a_wrong_prefix_is_caught(tmp_path, monkeypatch):
    good = "b3b3357e" + "0" * 56
    write_registry(tmp_path, monkeypatch, {"r3d_18-k400": {"sha256": good}})
    entry = get_entry("r3d_18-k400")
    assert entry.sha256 == good and entry.arch == "r3d_18"  # other fields kept
    assert entry.verification().startswith(f"sha256 {good[:12]}... (full, from pinned in {tmp_path}")
    write_registry(tmp_path, monkeypatch, {"r3d_18-k400": {"sha256": "f" * 64}})
    with pytest.raises(RegistryError, match="does not start with the published prefix b3b3357e"):
        get_entry("r3d_18-k400")


def test_unknown_names_list_the_known_ones_and_paths_stay_paths(cache):
    with pytest.raises(RegistryError, match=r"neither a bundle on disk nor a published encoder name.*r2plus1d_18-k400"):
        resolve_model("no-such-encoder")
    assert resolve_model("models/x.onnx") == Path("models/x.onnx")  # path-like: never looked up
    assert resolve_model(None) is None


def test_conversion_without_the_export_extra_names_it_and_leaves_no_bundle(server, cache, tmp_path, monkeypatch):
    data = b"weights" * 1000
    server.state.files["/w.pt"] = data
    write_registry(tmp_path, monkeypatch, {"tiny": {"url": server.url("/w.pt"), "sha256": sha(data),
                                                    "format": "vcl", "arch": "r3d_small", "licence": "test"}})
    monkeypatch.setattr("vcl_infer.encode.pretrained.convert.missing_export_modules", lambda: ["torch", "onnx"])
    with pytest.raises(MissingDependency, match=r"pip install 'vcl\[export\]'.*later runs need no torch"):
        resolve_model("tiny")
    assert not (cache / "bundles").exists() or files_under(cache / "bundles") == []
    # the verified download is kept: installing the extra later does not download again
    assert files_under(cache / "checkpoints") == [f"{sha(data)}/w.pt"]


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> bytes:
    import torch

    from training.checkpoint import save_checkpoint
    from training.models import create_backbone

    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model=create_backbone("r3d_small"), arch="r3d_small", method="simclr")
    return path.read_bytes()


def small_videos(folder: Path) -> Path:
    from video_fixtures import make_video

    folder.mkdir()
    for i, (w, h) in enumerate([(64, 48), (80, 64)]):
        make_video(folder / f"v{i}.mp4", num_frames=24, width=w, height=h)
    return folder


@pytest.mark.slow
def test_vcl_index_build_with_a_published_name_end_to_end(server, cache, tmp_path, monkeypatch, tiny_checkpoint):
    from vcl_infer.cli.index import main as vcl_index
    from vcl_infer.cli.search import main as vcl_search

    server.state.files["/tiny.pt"] = tiny_checkpoint
    write_registry(tmp_path, monkeypatch, {"test-entry": {
        "url": server.url("/tiny.pt"), "sha256": sha(tiny_checkpoint), "size": len(tiny_checkpoint),
        "format": "vcl", "arch": "r3d_small", "licence": "test-only"}})
    videos = small_videos(tmp_path / "videos")
    index = tmp_path / "index"
    runner = CliRunner()

    # 1. the connection drops mid-file: a clear error, no bundle, a resumable part
    server.state.cut_after = len(tiny_checkpoint) // 10  # 3 attempts fetch 30%
    failed = runner.invoke(vcl_index, ["build", str(videos), "--index", str(index), "--model", "test-entry"])
    assert failed.exit_code == 1 and "could not download" in failed.output and "resumes" in failed.output
    assert not (cache / "bundles").exists() or files_under(cache / "bundles") == []
    (part,) = (cache / "checkpoints").rglob("*.part")
    part_size = part.stat().st_size
    assert 0 < part_size < len(tiny_checkpoint)

    # 2. the network is back: the download resumes, is verified, converted once, and indexes
    server.state.cut_after = None
    built = runner.invoke(vcl_index, ["build", str(videos), "--index", str(index), "--model", "test-entry", "--json"])
    assert built.exit_code == 0, built.output
    kept = part_size
    assert server.state.requests[-1]["range"] == f"bytes={kept}-" and not part.exists()
    assert server.state.requests[-1]["sent"] == len(tiny_checkpoint) - kept  # only the rest was sent
    report = json.loads(built.output[built.output.index("{"):])
    bundle = Path(report["model"])
    assert bundle.is_relative_to(cache / "bundles") and bundle.name == "model.onnx"
    source = json.loads((bundle.parent / "source.json").read_text())
    assert source["entry"]["sha256"] == sha(tiny_checkpoint)

    # the bundle holds the published weights, not the packaged default encoder
    import torch

    from training.checkpoint import load_checkpoint
    from training.fingerprint import weights_fingerprint
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.embedder import DEFAULT_BUNDLE

    ckpt_path = tmp_path / "again.pt"
    ckpt_path.write_bytes(tiny_checkpoint)
    expected = weights_fingerprint({k: torch.as_tensor(v) for k, v in load_checkpoint(ckpt_path)["model"].items()})
    assert load_bundle_spec(bundle).fingerprint == expected != load_bundle_spec(DEFAULT_BUNDLE).fingerprint

    # 3. search by name finds the same cached bundle (no new download)
    requests_before = len(server.state.requests)
    found = runner.invoke(vcl_search, [str(videos / "v0.mp4"), "--index", str(index), "--model", "test-entry", "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)["results"][0]["video"].endswith("v0.mp4")
    assert len(server.state.requests) == requests_before

    # 4. later runs need neither the server nor torch
    server.stop()
    code = ("import sys; sys.modules['torch'] = None\n"
            "from vcl_infer.encode.embedder import Embedder\n"
            "e = Embedder.load('test-entry'); print(e.path); print('torch' in sys.modules and sys.modules['torch'] is not None)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(bundle), "False"]


def test_vcl_index_build_with_a_wrong_hash_or_no_server_fails_cleanly(server, cache, tmp_path, monkeypatch):
    from vcl_infer.cli.index import main as vcl_index

    server.state.files["/tiny.pt"] = b"tampered" * 500
    write_registry(tmp_path, monkeypatch, {
        "bad-hash": {"url": server.url("/tiny.pt"), "sha256": "cd" * 32, "format": "vcl", "arch": "r3d_small",
                     "licence": "test"},
        "no-server": {"url": closed_port_url(), "sha256": "cd" * 32, "format": "vcl", "arch": "r3d_small",
                      "licence": "test"},
    })
    videos = small_videos(tmp_path / "videos")
    runner = CliRunner()
    for name, message in (("bad-hash", "sha256"), ("no-server", "could not download")):
        result = runner.invoke(vcl_index, ["build", str(videos), "--index", str(tmp_path / name), "--model", name])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert files_under(cache) == []  # nothing half-written anywhere in the cache


def test_the_pretrained_runtime_imports_nothing_heavy(tmp_path):
    code = ("import json, sys\n"
            "import vcl_infer.encode.pretrained as p\n"
            "p.load_registry(); p.resolve_model('some/bundle.onnx')\n"
            "print(json.dumps([m for m in ('torch', 'onnx', 'onnxruntime', 'export', 'training') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_vcl_export_pretrained_downloads_verifies_and_exports(server, cache, tmp_path, monkeypatch, tiny_checkpoint):
    from export.cli import main as vcl_export

    server.state.files["/tiny.pt"] = tiny_checkpoint
    write_registry(tmp_path, monkeypatch, {"test-entry": {
        "url": server.url("/tiny.pt"), "sha256": sha(tiny_checkpoint), "format": "vcl", "arch": "r3d_small",
        "licence": "test-only", "description": "a generated test checkpoint"}})
    runner = CliRunner()
    listed = runner.invoke(vcl_export, ["--list-pretrained"])
    assert listed.exit_code == 0 and "test-entry" in listed.output and "r2plus1d_18-k400" in listed.output
    assert "prefix 91a641e6" in listed.output and "trust on first use" in listed.output
    out = tmp_path / "exported" / "enc.onnx"
    result = runner.invoke(vcl_export, ["--pretrained", "test-entry", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    spec = json.loads(out.with_suffix(".json").read_text())
    assert spec["arch"] == "r3d_small" and spec["method"] == "simclr" and spec["trained"] is True
    assert files_under(cache / "checkpoints") == [f"{sha(tiny_checkpoint)}/tiny.pt"]
    clash = runner.invoke(vcl_export, ["--pretrained", "test-entry", "--arch", "r3d_18", "--out", str(out)])
    assert clash.exit_code == 2 and "is a r3d_small" in clash.output
