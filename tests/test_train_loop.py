"""vcl-train end to end on a tiny synthetic set: every method, export, exact resume, SIGTERM,
unreadable videos, input errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from train_fixtures import TINY, synth_data, synth_with_bad_video  # noqa: F401

from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.config import TrainConfig
from training.loop import train

REPO = Path(__file__).resolve().parents[1]


def _queue(method: str) -> list[str]:
    return ["--set", "queue_size=16"] if method in ("moco", "fame") else []


@pytest.mark.parametrize("method", ["simclr", "moco", pytest.param("tclr", marks=pytest.mark.slow), "fame"])
def test_method_trains_and_exports(method, synth_data, tmp_path):  # noqa: F811
    from export.cli import main as export_main

    out = tmp_path / "run"
    r = CliRunner().invoke(train_main, ["--method", method, "--data", str(synth_data), "--out", str(out),
                                        "--epochs", "1", *TINY, *_queue(method)])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["method"] == method and ckpt["global_step"] == 2 and ckpt["epoch"] == 1
    assert ckpt["clip_spec"]["frames_per_clip"] == 4 and ckpt["clip_spec"]["crop_size"] == 32
    assert (out / "config.yaml").is_file() and (out / "epoch_001.pt").is_file()
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,lr,clips_per_s,loss") and len(lines) == 2
    r = CliRunner().invoke(export_main, [str(out / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.onnx").is_file() and '"method": "' + method in (tmp_path / "m.json").read_text()


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(method="moco", data=str(data), arch="r3d_small", out=str(out), epochs=2, batch_size=4,
                workers=0, frames=4, frame_step=2, crop=32, method_args={"queue_size": 16}, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(synth_data, tmp_path_factory):  # noqa: F811
    """An uninterrupted 2-epoch (4-step) MoCo run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    result = train(_config(synth_data, out), progress=False)
    assert result.global_step == 4 and result.stopped_by is None
    return load_checkpoint(out / "checkpoint.pt")


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [1, 2, 3])
def test_resume_gives_the_same_weights(stop_at, synth_data, reference, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    first = train(_config(synth_data, out, max_steps=stop_at), progress=False)
    assert first.stopped_by == "max_steps" and first.global_step == stop_at
    mid = load_checkpoint(out / "checkpoint.pt")
    assert mid["global_step"] == stop_at and mid["batches_done"] == (stop_at - 1) % 2 + 1
    done = train(_config(synth_data, out), resume=True, progress=False)
    assert done.global_step == 4 and done.stopped_by is None
    final = load_checkpoint(out / "checkpoint.pt")
    _assert_same_state(final["method_state"], reference["method_state"])
    _assert_same_state(final["model"], reference["model"])
    assert final["optimizer"]["state"].keys() == reference["optimizer"]["state"].keys()
    for k, v in final["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], reference["optimizer"]["state"][k]["momentum_buffer"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_sigterm_saves_then_resume_matches(synth_data, reference, tmp_path):  # noqa: F811
    """A run with a spawned decoding worker is stopped by SIGTERM, exits 0, and resumes exactly."""
    out = tmp_path / "run"
    args = ["--method", "moco", "--data", str(synth_data), "--out", str(out), "--epochs", "2", *TINY,
            "--workers", "1", "--set", "queue_size=16", "--set", "log_every=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", "from training.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    metrics = out / "metrics.csv"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    mid = load_checkpoint(out / "checkpoint.pt")
    assert 1 <= mid["global_step"] < 4
    train(_config(synth_data, out), resume=True, progress=False)
    final = load_checkpoint(out / "checkpoint.pt")
    _assert_same_state(final["method_state"], reference["method_state"])


def test_unreadable_video_is_skipped_and_counted(synth_with_bad_video, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    args = ["--method", "simclr", "--data", str(synth_with_bad_video), "--out", str(out), "--epochs", "1", *TINY,
            "--batch-size", "3"]
    r = CliRunner().invoke(train_main, args)
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable video" in r.output
    assert load_checkpoint(out / "checkpoint.pt")["skipped"] == 1


def test_input_errors_are_click_errors(synth_data, tmp_path):  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(train_main, ["--method", "simclr", "--data", str(empty), "--out", str(tmp_path / "o"), *TINY])
    assert r.exit_code == 1 and "no videos found" in r.output
    r = CliRunner().invoke(train_main, ["--method", "byol", "--data", str(synth_data), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "unknown method" in r.output and "simclr" in r.output
    r = CliRunner().invoke(train_main, ["--method", "simclr", "--data", str(synth_data), "--out", str(tmp_path / "o"),
                                        *TINY, "--batch-size", "64"])
    assert r.exit_code == 1 and "no full batch" in r.output
    r = CliRunner().invoke(train_main, ["--out", str(tmp_path / "none"), "--resume"])
    assert r.exit_code == 1 and "no checkpoint.pt" in r.output
    r = CliRunner().invoke(train_main, ["--list-methods"])
    assert r.exit_code == 0 and all(m in r.output for m in ("simclr", "moco", "tclr", "fame"))
