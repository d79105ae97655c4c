"""vcl-export --int8 --calibration DIR: a QDQ int8 bundle the runtime runs unchanged, close to fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from export.cli import main as vcl_export

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
CALIBRATION = VIDEOS / "mmaction2"  # demo.mp4, test.avi: real action clips
HELD_OUT = VIDEOS / "decord" / "flipping_a_pancake.mkv"
needs_videos = pytest.mark.skipif(not (CALIBRATION.is_dir() and HELD_OUT.is_file()),
                                  reason="../shared/videos not found")

# Tolerance of int8 against fp32 on unit-length embeddings (clips the calibration never saw).
MAX_ABS_ERROR = 0.05
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from training.checkpoint import save_checkpoint
    from training.models import create_backbone

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("int8") / "small.pt"
    return save_checkpoint(path, model=create_backbone("r3d_small"), arch="r3d_small", method="simclr")


def export(*args) -> object:
    return CliRunner().invoke(vcl_export, [str(a) for a in args])


@needs_videos
@pytest.mark.slow
def test_int8_bundle_runs_in_the_runtime_and_stays_close_to_fp32(tmp_path, checkpoint):
    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.video.isolated import decode_clips

    # a dotted name beside the fp32 bundle: each keeps its own sidecar and report
    fp32_out, int8_out = tmp_path / "enc.onnx", tmp_path / "enc.int8.onnx"
    assert export(checkpoint, "--out", fp32_out).exit_code == 0
    result = export(checkpoint, "--out", int8_out, "--int8", "--calibration", CALIBRATION,
                    "--calibration-clips", "3", "--verify-video", HELD_OUT, "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["enc.onnx", "enc.json", "enc.verify.json", "enc.int8.onnx", "enc.int8.json", "enc.int8.verify.json"])

    graph = onnx.load(str(int8_out)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "weights are not stored as int8"

    fp32, int8 = Embedder.load(fp32_out), Embedder.load(int8_out)
    quant = int8.spec.quantization
    assert quant["type"] == "int8" and quant["format"] == "QDQ"
    assert quant["calibration"]["clips"] == 6 and quant["calibration"]["videos"] == 2
    assert quant["source_fingerprint"] == fp32.spec.fingerprint != int8.spec.fingerprint
    assert quant["fidelity_vs_fp32"]["held_out"]["min_cosine"] >= MIN_COSINE
    assert fp32.spec.quantization == {} and "quantization" not in json.loads(fp32_out.with_suffix(".json").read_text())

    # our own check on clips the export never used (other offsets of the held-out video)
    from vcl_infer.clips.preprocess import to_model_input

    clips = to_model_input(decode_clips(str(HELD_OUT), fp32.spec.clip, 7).clips, fp32.spec.clip)
    a, b = fp32.embed_clips(clips), int8.embed_clips(clips)
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert np.max(np.abs(a - b)) <= MAX_ABS_ERROR and cosine.min() >= MIN_COSINE
    assert np.max(np.abs(a - b)) > 0  # it really is a different (quantized) computation


def test_int8_without_calibration_videos_is_a_usage_error(tmp_path):
    result = export("--arch", "r3d_small", "--out", tmp_path / "m.onnx", "--int8")
    assert result.exit_code == 2 and "--calibration DIR" in result.output
    assert list(tmp_path.iterdir()) == []


@needs_videos
def test_a_calibration_folder_without_readable_videos_writes_nothing(tmp_path):
    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    out = tmp_path / "out"
    result = export("--arch", "r3d_small", "--out", out / "m.onnx", "--int8", "--calibration", empty)
    assert result.exit_code == 1 and "no clip could be decoded" in result.output
    assert not out.exists() or list(out.iterdir()) == []
