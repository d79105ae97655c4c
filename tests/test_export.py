"""vcl-export end to end: bundles that describe themselves and match torch."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from export.cli import main as vcl_export
from training.fingerprint import weights_fingerprint
from training.models import create_backbone
from vcl_infer.clips.spec import SPEC_METADATA_KEY, EncoderSpec
from vcl_infer.encode.bundle import load_bundle_spec
from vcl_infer.errors import SpecMismatch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT.parent / "shared" / "videos" / "mmaction2" / "demo.mp4"
GOLDEN = ROOT / "tests" / "fixtures" / "torchvision_golden.json"
needs_demo = pytest.mark.skipif(not DEMO.exists(), reason="../shared/videos/mmaction2/demo.mp4 not found")

# what DESIGN.md says the spec holds ("The encoder bundle" section)
DESIGN_FIELDS = {
    "format_version", "arch", "method", "embed_dim", "l2_normalized", "frames_per_clip",
    "frame_step", "target_fps", "resize_mode", "resize_size", "crop_size", "mean", "std",
    "layout", "fingerprint", "verification",
}


def run_export(*args):
    result = CliRunner().invoke(vcl_export, [str(a) for a in args])
    return result


def golden_helpers():
    spec = importlib.util.spec_from_file_location("golden", ROOT / "tests" / "fixtures" / "make_torchvision_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_demo
@pytest.mark.parametrize("arch", [pytest.param("r2plus1d_18", marks=pytest.mark.slow), "r3d_small"])
def test_export_matches_torch_on_clips_of_a_real_video(tmp_path, arch):
    out = tmp_path / f"{arch}.onnx"
    result = run_export("--arch", arch, "--out", out, "--verify-video", DEMO, "--clips-per-video", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".verify.json").read_text())
    (check,) = report["checks"]
    assert check["min_cosine"] >= 0.9999 and check["max_abs_error"] <= 1e-4
    assert check["clips"] == 2 and all("demo.mp4" in s for s in check["sources"])

    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    spec = json.loads(meta[SPEC_METADATA_KEY])
    assert DESIGN_FIELDS <= set(spec)
    assert spec["arch"] == arch and spec["trained"] is False and spec["method"] == "untrained"
    assert spec["verification"]["onnxruntime_vs_torch"]["min_cosine"] >= 0.9999
    assert json.loads(out.with_suffix(".json").read_text()) == spec  # sidecar mirrors it

    # independent re-check: same weights? the fingerprint names them; rerun torch ourselves
    session = ort.InferenceSession(str(out))
    assert session.get_inputs()[0].shape[0] == "batch"
    assert EncoderSpec.from_dict(spec).embed_dim == session.get_outputs()[0].shape[1]


def torchvision_style_checkpoint(path: Path, arch: str, golden) -> dict:
    """A state dict with torchvision's exact key names, shapes and dtypes (incl. the fc head)."""
    entries = json.loads(GOLDEN.read_text())["archs"][arch]["state_dict"]
    shapes = {k: s for k, s, _ in entries}
    weights = golden.golden_state_dict({k: s for k, s in shapes.items() if not k.startswith("fc.")})
    state = {}
    for key, shape, _dtype in entries:
        if key in weights:
            state[key] = torch.from_numpy(weights[key]).float()
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
        else:  # the classifier head
            state[key] = torch.zeros(shape)
    torch.save(state, path)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["r2plus1d_18", "r3d_18"])
def test_torchvision_state_dict_exports_to_torchvisions_pooled_features(tmp_path, arch):
    golden = golden_helpers()
    ckpt = tmp_path / f"{arch}_tv.pth"
    torchvision_style_checkpoint(ckpt, arch, golden)
    out = tmp_path / "tv.onnx"
    # the golden input is 8 frames of 32 x 32: export the bundle for exactly that shape
    result = run_export(ckpt, "--out", out, "--frames", "8", "--resize", "32", "--crop", "32")
    assert result.exit_code == 0, result.output
    assert "fc.weight" in result.output and "dropped" in result.output  # the head is dropped, with a note
    spec = load_bundle_spec(out)
    assert spec.arch == arch and spec.trained  # auto-detected from the key shapes
    features = np.asarray(json.loads(GOLDEN.read_text())["archs"][arch]["features"])
    expected = features / np.linalg.norm(features, axis=1, keepdims=True)
    got = ort.InferenceSession(str(out)).run(None, {"clips": golden.golden_input().astype(np.float32)})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_untrained_export_is_labelled_and_fingerprinted(tmp_path):
    out = tmp_path / "small.onnx"
    result = run_export("--arch", "r3d_small", "--out", out)
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.output
    spec = load_bundle_spec(out)
    assert not spec.trained and spec.method == "untrained"
    assert "synthetic" in json.loads(out.with_suffix(".verify.json").read_text())["checks"][0]["sources"][0]
    assert "untrained" in onnx.load(str(out)).doc_string


def test_vcl_checkpoint_round_trip_keeps_weights_and_spec(tmp_path):
    from training.checkpoint import save_checkpoint
    from vcl_infer.clips.spec import ClipSpec

    torch.manual_seed(0)
    model = create_backbone("r2plus1d_small")
    clip = ClipSpec(frames_per_clip=4, frame_step=1, resize_size=40, crop_size=32)
    ckpt = tmp_path / "run.pt"
    save_checkpoint(ckpt, model=model, arch="r2plus1d_small", method="simclr", clip_spec=clip)
    out = tmp_path / "bundle"
    result = run_export(ckpt, "--out", out)
    assert result.exit_code == 0, result.output
    spec = load_bundle_spec(out)
    assert spec.clip == clip and spec.method == "simclr" and spec.trained
    assert spec.fingerprint == weights_fingerprint(model.state_dict())
    x = torch.randn(3, *clip.input_shape)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.eval()(x), dim=1).numpy()
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"clips": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-5


def test_failed_verification_writes_nothing(tmp_path):
    out = tmp_path / "never.onnx"
    result = run_export("--arch", "r3d_small", "--out", out, "--min-cosine", "1.5")
    assert result.exit_code != 0 and "nothing was written" in result.output
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_without_gpu_stops_cleanly_and_writes_nothing(tmp_path, monkeypatch):
    if torch.cuda.is_available() and importlib.util.find_spec("tensorrt"):
        pytest.skip("this machine can build engines; the gpu test covers it")
    out = tmp_path / "engine.onnx"
    result = run_export("--arch", "r3d_small", "--out", out, "--engine", "trt")
    assert result.exit_code != 0
    assert "TensorRT" in result.output or "CUDA" in result.output
    assert "Nothing was written" in result.output
    assert list(tmp_path.iterdir()) == []


def test_sidecar_that_disagrees_with_the_model_is_refused(tmp_path):
    out = tmp_path / "small.onnx"
    assert run_export("--arch", "r3d_small", "--out", out).exit_code == 0
    sidecar = out.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["crop_size"] = 32
    sidecar.write_text(json.dumps(data))
    with pytest.raises(SpecMismatch, match="authoritative"):
        load_bundle_spec(out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT")
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    out = tmp_path / "trt.onnx"
    args = ["--arch", "r2plus1d_18", "--out", out, "--engine", "trt", "--max-batch", "8"]
    if DEMO.exists():
        args += ["--verify-video", DEMO]
    result = run_export(*args)
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".engine.json").read_text())
    assert record["verification"]["min_cosine"] >= 0.9999
    assert record["gpu_name"] and record["tensorrt_version"]
    print(json.dumps(record["verification"], indent=1), file=sys.stderr)
