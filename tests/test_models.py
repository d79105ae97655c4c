"""Backbones: torchvision compatibility (golden fixture + live when importable), contract, speed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.models import VideoResNet, create_backbone, list_backbones, r2plus1d_midplanes

FIXTURES = Path(__file__).with_name("fixtures")
GOLDEN = json.loads((FIXTURES / "torchvision_golden.json").read_text())


def _load_golden_helpers():
    spec = importlib.util.spec_from_file_location(
        "make_torchvision_golden", FIXTURES / "make_torchvision_golden.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gold = _load_golden_helpers()
TV_ARCHS = ("r3d_18", "r2plus1d_18")


def _tv_entries(arch: str) -> dict[str, tuple[list[int], str]]:
    return {
        k: (shape, dtype)
        for k, shape, dtype in GOLDEN["archs"][arch]["state_dict"]
        if not k.startswith("fc.")
    }


def _golden_model(arch: str) -> VideoResNet:
    model = create_backbone(arch).double().eval()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = gold.golden_state_dict(shapes, GOLDEN["seed"])
    sd = {k: (torch.from_numpy(weights[k]) if k in weights else v) for k, v in model.state_dict().items()}
    model.load_state_dict(sd, strict=True)
    return model


@pytest.mark.parametrize("arch", TV_ARCHS + ("r3d_18_tclr",))
def test_state_dict_layout_matches_torchvision(arch: str) -> None:
    tv_arch = "r3d_18" if arch == "r3d_18_tclr" else arch
    ours = {
        k: (list(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in create_backbone(arch).state_dict().items()
    }
    assert ours == _tv_entries(tv_arch)
    # Same order too, so positional tools (ONNX initialisers, optimizers) line up.
    assert list(ours) == list(_tv_entries(tv_arch))
    fc = [k for k, _, _ in GOLDEN["archs"][tv_arch]["state_dict"] if k.startswith("fc.")]
    assert fc == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("arch", TV_ARCHS)
def test_loads_torchvision_shaped_state_dict_strictly(arch: str) -> None:
    tv_sd = {
        k: torch.zeros(shape, dtype=getattr(torch, dtype)) for k, (shape, dtype) in _tv_entries(arch).items()
    }
    result = create_backbone(arch).load_state_dict(tv_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("arch", TV_ARCHS)
def test_pooled_features_match_torchvision_golden(arch: str) -> None:
    model = _golden_model(arch)
    x = torch.from_numpy(gold.golden_input(GOLDEN["seed"], GOLDEN["input_shape"]))
    with torch.no_grad():
        ours = model(x).numpy()
    expected = np.asarray(GOLDEN["archs"][arch]["features"])
    assert ours.shape == expected.shape == (GOLDEN["input_shape"][0], 512)
    scale = float(np.abs(expected).max())
    assert scale > 0.1  # the fixture is not degenerate
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("arch", TV_ARCHS)
def test_matches_live_torchvision_when_available(arch: str) -> None:
    video = pytest.importorskip("torchvision.models.video")
    tv = getattr(video, arch)(weights=None).eval()
    tv.fc = torch.nn.Identity()
    ours = create_backbone(arch).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-4, atol=1e-5)


def test_forward_contract_and_shapes() -> None:
    model = create_backbone("r3d_small").eval()
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.embed_dim, 1, 4, 4)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        torch.testing.assert_close(model(x), feats.flatten(2).mean(-1))
    assert create_backbone("r3d_18").embed_dim == create_backbone("r2plus1d_18").embed_dim == 512
    with pytest.raises(ValueError, match="B x 3 x T x H x W"):
        model(torch.randn(2, 8, 64, 64))


def test_tclr_variant_keeps_four_temporal_positions() -> None:
    tclr = create_backbone("r3d_18_tclr").eval()
    with torch.no_grad():
        feats = tclr.forward_features(torch.randn(1, 3, 16, 32, 32))
        plain = create_backbone("r3d_18").eval().forward_features(torch.randn(1, 3, 16, 32, 32))
    assert feats.shape == (1, 512, 4, 2, 2)
    assert plain.shape == (1, 512, 2, 2, 2)
    conv = tclr.layer4[0].conv1[0]
    assert (conv.stride, conv.padding, conv.dilation) == ((1, 2, 2), (2, 1, 1), (2, 1, 1))
    assert tclr.layer4[0].downsample[0].stride == (1, 2, 2)


def test_r2plus1d_midplanes_formula() -> None:
    # torchvision's R(2+1)D-18 widths: 144 (64->64), 230 (64->128), 288 (128->128).
    assert r2plus1d_midplanes(64, 64) == 144
    assert r2plus1d_midplanes(64, 128) == 230
    assert r2plus1d_midplanes(128, 128) == 288


def test_init_follows_torchvision() -> None:
    torch.manual_seed(0)
    model = create_backbone("r3d_18")
    conv = model.layer3[0].conv1[0].weight
    expected_std = (2.0 / (conv.shape[0] * 27)) ** 0.5  # kaiming fan_out, ReLU gain
    assert abs(conv.std().item() / expected_std - 1) < 0.05
    bn = model.layer3[0].conv1[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_registry() -> None:
    names = list_backbones()
    assert {"r3d_18", "r2plus1d_18", "r3d_18_tclr", "r3d_small", "r2plus1d_small"} <= set(names)
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())
    with pytest.raises(KeyError, match="valid backbones: .*r3d_18"):
        create_backbone("resnet9000")
    assert create_backbone("r3d_small", widths=(8, 8, 16, 32)).embed_dim == 32


def _conv_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(module: torch.nn.Conv3d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (module.in_channels // module.groups) * int(np.prod(module.kernel_size))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("arch", ["r3d_small", "r2plus1d_small"])
def test_small_variants_are_cheap(arch: str) -> None:
    # Cost by counted multiply-adds, not wall time (timings belong in benchmarks/): a batch of
    # 8 x 3 x 8 x 64 x 64 costs < 2.5 GMAC (r3d_18: ~53 GMAC), well under 1 s on 2 cores.
    model = create_backbone(arch).eval()
    x = torch.randn(8, 3, 8, 64, 64)
    small = _conv_macs(model, x)
    assert model(x).shape == (8, 128)
    assert small < 2.5e9, f"{arch}: {small / 1e9:.2f} GMAC"
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
