"""vcl-export --features: a longshort checkpoint's stationary / non-stationary half, or all of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from export.cli import FEATURES
from export.cli import main as vcl_export
from export.pipeline import FeatureSlice, select_features
from training.checkpoint import save_checkpoint
from training.methods.longshort import FEATURE_PARTS
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.encode.bundle import load_bundle_spec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
D = 128  # r3d_small's embed_dim
PARTS = {"stationary": (0, D // 2), "non-stationary": (D // 2, D), "all": (0, D)}


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_backbone("r3d_small").eval()
    assert model.embed_dim == D
    return model


def checkpoint(path: Path, backbone: torch.nn.Module, method: str) -> Path:
    return save_checkpoint(path, model=backbone, arch="r3d_small", method=method, clip_spec=SPEC)


@pytest.fixture(scope="module")
def longshort_ckpt(backbone, tmp_path_factory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("ls") / "checkpoint.pt", backbone, "longshort")


def export(*args) -> object:
    return CliRunner().invoke(vcl_export, [str(a) for a in args])


@pytest.fixture(scope="module")
def exported(longshort_ckpt, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("parts")
    paths = {}
    for part in PARTS:
        paths[part] = out / f"{part}.onnx"
        r = export(longshort_ckpt, "--out", paths[part], "--features", part)
        assert r.exit_code == 0, r.output
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("part", list(PARTS))
def test_each_part_matches_its_torch_slice(part, exported, backbone) -> None:
    spec = load_bundle_spec(exported[part])
    start, stop = PARTS[part]
    assert spec.embed_dim == stop - start and spec.trained
    assert spec.method == ("longshort" if part == "all" else f"longshort:{part}")
    assert spec.verification["onnxruntime_vs_torch"]["min_cosine"] >= 0.9999
    x = torch.randn(3, *SPEC.input_shape, generator=torch.Generator().manual_seed(2))
    session = ort.InferenceSession(str(exported[part]), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = F.normalize(backbone(x)[:, start:stop], dim=1).numpy()
    assert got.shape == (3, stop - start)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_parts_have_distinct_fingerprints(exported) -> None:
    prints = {part: load_bundle_spec(path).fingerprint for part, path in exported.items()}
    assert len(set(prints.values())) == 3  # an index built with one part refuses the others
    report = json.loads(exported["stationary"].with_suffix(".verify.json").read_text())
    assert report["spec"]["method"] == "longshort:stationary"


def test_cli_choices_are_the_longshort_parts_and_temporal() -> None:
    assert FEATURES == (*FEATURE_PARTS, "temporal")


def test_bad_features_value_is_refused(longshort_ckpt, tmp_path) -> None:
    r = export(longshort_ckpt, "--out", tmp_path / "m.onnx", "--features", "static")
    assert r.exit_code == 2 and "'static' is not one of" in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_a_part_of_another_method_is_refused(backbone, tmp_path) -> None:
    ckpt = checkpoint(tmp_path / "moco.pt", backbone, "moco")
    r = export(ckpt, "--out", tmp_path / "m.onnx", "--features", "stationary")
    assert r.exit_code == 1 and "longshort" in r.output and "'moco'" in r.output and "--features all" in r.output
    assert not (tmp_path / "m.onnx").exists()
    r = export("--arch", "r3d_small", "--out", tmp_path / "u.onnx", "--features", "non-stationary")
    assert r.exit_code == 1 and "'untrained'" in r.output


def test_select_features_directly(backbone) -> None:
    same, method = select_features(backbone, "longshort", "all")
    assert same is backbone and method == "longshort"
    part, method = select_features(backbone, "longshort", "non-stationary")
    assert isinstance(part, FeatureSlice) and part.embed_dim == D // 2 and method == "longshort:non-stationary"
    with pytest.raises(ValueError, match="features must be one of"):
        select_features(backbone, "longshort", "both")
    with pytest.raises(ValueError, match="inside"):
        FeatureSlice(backbone, 10, D + 1)
