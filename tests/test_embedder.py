from pathlib import Path

import numpy as np
import pytest
import torch

from export.pipeline import export_bundle
from training.models import create_backbone
from vcl_infer import Embedder
from vcl_infer.clips.spec import ClipSpec, EncoderSpec
from vcl_infer.errors import SpecMismatch, VideoError
from vcl_infer.video.isolated import decode_clips

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
needs_videos = pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/videos not found")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    backbone = create_backbone("r3d_small")
    clip = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=40, crop_size=32)
    out = tmp_path_factory.mktemp("bundle") / "enc.onnx"
    export_bundle(backbone, EncoderSpec(arch="r3d_small", embed_dim=128, clip=clip), out)
    return out


@needs_videos
def test_video_vector_is_the_renormalised_mean_of_normalised_clip_vectors(bundle):
    embedder = Embedder.load(bundle)
    video = VIDEOS / "mmaction2" / "demo.mp4"
    vector = embedder.embed_video(video, num_clips=3)
    assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    decoded = decode_clips(video, embedder.spec.clip, 3)
    from vcl_infer.clips.preprocess import to_model_input

    clips = embedder.embed_clips(to_model_input(decoded.clips, embedder.spec.clip))
    clips /= np.linalg.norm(clips, axis=1, keepdims=True)
    expected = clips.mean(axis=0) / np.linalg.norm(clips.mean(axis=0))
    assert np.allclose(vector, expected, atol=1e-5)


@needs_videos
def test_embed_videos_keeps_order_and_reports_bad_files(bundle):
    embedder = Embedder.load(bundle)
    paths = [VIDEOS / "mmaction2" / "test.avi", VIDEOS / "small" / "Mpeg4.mp4", VIDEOS / "decord" / "video_90.mov"]
    results = list(embedder.embed_videos(paths, num_clips=2))
    assert [p for p, _ in results] == [str(p) for p in paths]
    assert isinstance(results[1][1], VideoError)
    assert results[0][1].shape == (128,) and results[2][1].shape == (128,)


def test_wrong_clip_shape_is_refused(bundle):
    with pytest.raises(SpecMismatch, match="4 x 32 x 32"):
        Embedder.load(bundle).embed_clips(np.zeros((2, 3, 8, 32, 32), np.float32))


def test_torch_backend_agrees_with_the_onnx_bundle(bundle):
    from training.checkpoint_import import import_checkpoint  # noqa: F401  (export side builds the module)

    onnx_embedder = Embedder.load(bundle)
    torch.manual_seed(0)
    module = create_backbone("r3d_small")  # the fixture's weights: same seed, same init order
    torch_embedder = Embedder.from_torch(module, onnx_embedder.spec, device="cpu")
    x = np.random.default_rng(0).standard_normal((3, *onnx_embedder.spec.clip.input_shape)).astype(np.float32)
    assert np.abs(torch_embedder.embed_clips(x) - onnx_embedder.embed_clips(x)).max() < 1e-5


def test_provider_preference_is_tensorrt_then_cuda_then_cpu():
    from vcl_infer.encode.backends.onnxruntime_backend import choose_providers

    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_unknown_backend_lists_the_valid_ones(bundle):
    with pytest.raises(KeyError, match="onnxruntime"):
        Embedder.load(bundle, backend="openvino")


def test_the_packaged_default_encoder_loads_and_is_trained():
    import json

    from vcl_infer.encode.embedder import DEFAULT_BUNDLE

    embedder = Embedder.load()  # no bundle: the one shipped in vcl_infer/models/
    assert embedder.spec.trained and embedder.spec.method != "untrained"
    results = json.loads(DEFAULT_BUNDLE.with_name("default.results.json").read_text())
    assert results["trained"]["R@1"] > results["untrained"]["R@1"]  # what the README reports
    x = np.zeros((1, *embedder.spec.clip.input_shape), np.float32)
    assert embedder.embed_clips(x).shape == (1, embedder.spec.embed_dim)
