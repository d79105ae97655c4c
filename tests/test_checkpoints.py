"""vcl checkpoint save/load and import of torchvision / TCLR / FAME layouts."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from training.checkpoint import CheckpointError, clip_spec_of, load_checkpoint, save_checkpoint
from training.checkpoint_import import ImportedCheckpoint, import_checkpoint
from training.models import create_backbone
from vcl_infer.clips.spec import KINETICS_MEAN, ClipSpec


@pytest.fixture(scope="module")
def full_models() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return {name: create_backbone(name).state_dict() for name in ("r3d_18", "r2plus1d_18")}


def _small_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return create_backbone("r3d_small").state_dict()


def _assert_exact(imported: ImportedCheckpoint, expected: dict[str, torch.Tensor]) -> None:
    assert list(imported.state_dict) == list(expected)
    for k, v in expected.items():
        assert torch.equal(imported.state_dict[k], v), k
    model = create_backbone(imported.arch, **imported.arch_kwargs)
    result = model.load_state_dict(imported.state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


# --- our own format ------------------------------------------------------------------------


def test_vcl_checkpoint_roundtrip(tmp_path: Path) -> None:
    model = create_backbone("r3d_small", widths=(8, 8, 16, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    opt.step()
    spec = ClipSpec(frames_per_clip=8, crop_size=64, resize_size=72)
    path = save_checkpoint(
        tmp_path / "ckpt.pt",
        model=torch.nn.DataParallel(model),
        arch="r3d_small",
        arch_kwargs={"widths": (8, 8, 16, 32)},
        method="simclr",
        clip_spec=spec,
        config={"lr": 0.1},
        extra={"optimizer": opt.state_dict(), "epoch": 3},
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp files left
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "vcl-checkpoint" and ckpt["format_version"] == 1
    assert (ckpt["arch"], ckpt["method"], ckpt["epoch"], ckpt["config"]) == (
        "r3d_small",
        "simclr",
        3,
        {"lr": 0.1},
    )
    assert clip_spec_of(ckpt) == spec
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["model"][k], v)
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ckpt["optimizer"])

    imported = import_checkpoint(path)
    assert (imported.source_format, imported.method, imported.clip_spec) == ("vcl", "simclr", spec)
    assert imported.arch_kwargs == {"widths": (8, 8, 16, 32)}
    _assert_exact(imported, model.state_dict())


def test_vcl_safetensors_roundtrip(tmp_path: Path) -> None:
    sd = _small_sd()
    path = save_checkpoint(
        tmp_path / "w.safetensors",
        model=sd,
        arch="r3d_small",
        method="tclr",
        clip_spec=ClipSpec(),
        config={"seed": 1},
    )
    ckpt = load_checkpoint(path)
    assert (ckpt["arch"], ckpt["method"], ckpt["config"]) == ("r3d_small", "tclr", {"seed": 1})
    assert clip_spec_of(ckpt) == ClipSpec()
    imported = import_checkpoint(path)
    assert imported.source_format == "vcl"
    _assert_exact(imported, sd)
    with pytest.raises(ValueError, match="weights only"):
        save_checkpoint(
            tmp_path / "x.safetensors", model=sd, arch="r3d_small", method="m", extra={"epoch": 1}
        )


def test_save_rejects_reserved_extra_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="arch"):
        save_checkpoint(
            tmp_path / "c.pt", model=_small_sd(), arch="r3d_small", method="m", extra={"arch": "x"}
        )


def test_load_checkpoint_refuses_foreign_files(tmp_path: Path) -> None:
    torch.save({"state_dict": _small_sd()}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a vcl checkpoint.*import_checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path)


# --- torchvision ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18"])
def test_torchvision_state_dict_auto_detects_arch(tmp_path: Path, full_models, arch: str) -> None:
    sd = full_models[arch]
    tv = {**sd, "fc.weight": torch.randn(400, 512), "fc.bias": torch.randn(400)}
    torch.save(tv, tmp_path / f"{arch}.pth")
    imported = import_checkpoint(tmp_path / f"{arch}.pth")
    assert (imported.arch, imported.source_format, imported.method) == (arch, "torchvision", "supervised")
    assert any("dropped classifier fc.bias (400,), fc.weight (400, 512)" in n for n in imported.notes)
    assert imported.clip_spec is not None and imported.clip_spec.mean == KINETICS_MEAN
    assert imported.clip_spec.channel_order == "RGB" and imported.clip_spec.crop_size == 112
    _assert_exact(imported, sd)


def test_explicit_wrong_arch_names_wrong_shapes(tmp_path: Path, full_models) -> None:
    torch.save(full_models["r3d_18"], tmp_path / "r3d.pth")
    with pytest.raises(CheckpointError, match="wrong shapes: stem.0.weight"):
        import_checkpoint(tmp_path / "r3d.pth", arch="r2plus1d_18")


# --- TCLR ----------------------------------------------------------------------------------


def _tclr_head() -> dict[str, torch.Tensor]:
    head = torch.nn.ModuleDict(
        {
            "fc1": torch.nn.Linear(512, 512),
            "bn1": torch.nn.BatchNorm1d(512),
            "fc2": torch.nn.Linear(512, 128, bias=False),
            "bn2": torch.nn.BatchNorm1d(128),
        }
    )
    return head.state_dict()


def _grad_scaler() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy = getattr(torch.cuda.amp, "GradScaler", None)
        if legacy is not None:  # the class TCLR's (older) torch pickled: torch.cuda.amp.grad_scaler
            return legacy(enabled=False)
        return torch.amp.GradScaler("cpu", enabled=False)


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_tclr_pretraining_checkpoint(tmp_path: Path, full_models, prefix: str) -> None:
    sd = full_models["r3d_18"]
    # train_gen_all_step.py: DataParallel(Sequential(backbone, mlp)).state_dict() + training state.
    state = {f"{prefix}0.{k}": v for k, v in sd.items()}
    state.update({f"{prefix}1.{k}": v for k, v in _tclr_head().items()})
    torch.save(
        {
            "epoch": 100,
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": []},
            "learning_rate": 1e-3,
            "amp_scaler": _grad_scaler(),
        },
        tmp_path / "tclr.pth",
    )
    imported = import_checkpoint(tmp_path / "tclr.pth")
    assert (imported.arch, imported.source_format, imported.method) == ("r3d_18_tclr", "tclr", "tclr")
    assert any("projection head" in n and "fc1.*" in n for n in imported.notes)
    spec = imported.clip_spec
    assert spec.channel_order == "BGR" and spec.mean == (0, 0, 0) and spec.std == (1, 1, 1)
    assert (spec.frames_per_clip, spec.crop_size) == (16, 112)
    _assert_exact(imported, sd)
    # Override the architecture: same weights as a plain R3D-18.
    assert import_checkpoint(tmp_path / "tclr.pth", arch="r3d_18").arch == "r3d_18"


def test_tclr_backbone_only_and_linear_eval_layouts(tmp_path: Path, full_models) -> None:
    sd = full_models["r3d_18"]
    torch.save({"bb_state_dict": dict(sd)}, tmp_path / "bb.pth")
    imported = import_checkpoint(tmp_path / "bb.pth", format="tclr")
    assert imported.arch == "r3d_18_tclr"
    _assert_exact(imported, sd)
    # linear_eval/train.py: DataParallel(classifier) with a 102-way fc.
    lin = {f"module.{k}": v for k, v in sd.items()}
    lin.update({"module.fc.weight": torch.randn(102, 512), "module.fc.bias": torch.randn(102)})
    torch.save({"epoch": 5, "state_dict": lin, "optimizer": {}}, tmp_path / "lin.pth")
    imported = import_checkpoint(tmp_path / "lin.pth", format="tclr")
    assert imported.method == "tclr" and any("fc.weight (102, 512)" in n for n in imported.notes)
    _assert_exact(imported, sd)


# --- FAME ----------------------------------------------------------------------------------


def _fame_checkpoint(sd: dict[str, torch.Tensor], arch: str = "r2plus1d_18") -> dict:
    # train.py: DDP(MoCo).state_dict(); encoder_q.fc = Sequential(Linear, ReLU, Linear) (mlp=True).
    state = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    state.update({f"module.encoder_k.{k}": v.clone() + 1 for k, v in sd.items() if v.is_floating_point()})
    for enc in ("encoder_q", "encoder_k"):
        state.update(
            {
                f"module.{enc}.fc.0.weight": torch.randn(512, 512),
                f"module.{enc}.fc.0.bias": torch.randn(512),
                f"module.{enc}.fc.2.weight": torch.randn(128, 512),
                f"module.{enc}.fc.2.bias": torch.randn(128),
            }
        )
    state.update({"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    return {"epoch": 200, "arch": arch, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}


def test_fame_moco_checkpoint(tmp_path: Path, full_models) -> None:
    sd = full_models["r2plus1d_18"]
    torch.save(_fame_checkpoint(sd), tmp_path / "checkpoint_0199.pth.tar")
    imported = import_checkpoint(tmp_path / "checkpoint_0199.pth.tar")
    assert (imported.arch, imported.source_format, imported.method) == ("r2plus1d_18", "fame", "fame")
    assert any("kept encoder_q" in n and "encoder_k" in n for n in imported.notes)
    assert any("fc.0.weight" in n and "fc.2.bias" in n for n in imported.notes)
    assert imported.clip_spec.mean == KINETICS_MEAN
    _assert_exact(imported, sd)


def test_fame_i3d_is_refused(tmp_path: Path, full_models) -> None:
    torch.save(_fame_checkpoint(full_models["r2plus1d_18"], arch="I3D"), tmp_path / "i3d.pth.tar")
    with pytest.raises(CheckpointError, match="I3D"):
        import_checkpoint(tmp_path / "i3d.pth.tar")


# --- refusals ------------------------------------------------------------------------------


def _import_small(path: Path) -> ImportedCheckpoint:
    return import_checkpoint(path, format="torchvision", arch="r3d_small")


def test_small_import_is_exact_and_half_is_cast(tmp_path: Path) -> None:
    sd = _small_sd()
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ok.pt")
    _assert_exact(_import_small(tmp_path / "ok.pt"), sd)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(half, tmp_path / "half.pt")
    imported = _import_small(tmp_path / "half.pt")
    assert imported.state_dict["stem.0.weight"].dtype == torch.float32
    assert any("cast float16" in n for n in imported.notes)


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    sd = _small_sd()
    sd["layer2.0.conv1.0.weight"] = torch.zeros(32, 16, 3, 3, 1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointError, match=r"wrong shapes: layer2.0.conv1.0.weight: checkpoint \(32, 16, 3, 3, 1\)"
    ):
        _import_small(tmp_path / "bad.pt")


def test_extra_and_missing_keys_are_refused(tmp_path: Path) -> None:
    sd = _small_sd()
    sd["layer5.weight"] = torch.zeros(3)
    del sd["layer1.0.conv2.1.running_var"]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        _import_small(tmp_path / "bad.pt")
    assert "unexpected keys: layer5.weight" in str(err.value)
    assert "missing keys: layer1.0.conv2.1.running_var" in str(err.value)


def test_sparse_and_nonfinite_tensors_are_refused(tmp_path: Path) -> None:
    sd = _small_sd()
    sd["stem.1.weight"] = sd["stem.1.weight"].to_sparse()
    torch.save(sd, tmp_path / "sparse.pt")
    with pytest.raises(CheckpointError, match=r"stem.1.weight \(layout torch.sparse_coo"):
        _import_small(tmp_path / "sparse.pt")
    sd = _small_sd()
    sd["stem.1.bias"][0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="stem.1.bias .contains NaN"):
        _import_small(tmp_path / "nan.pt")


class _Payload:
    """Unpickling this runs ``exec``, which writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _small_sd(), "hook": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        import_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_unknown_layout_and_format_errors(tmp_path: Path) -> None:
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="no state dict found"):
        import_checkpoint(tmp_path / "odd.pt")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="fit none of the known architectures.*arch="):
        import_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="format must be one of"):
        import_checkpoint(tmp_path / "tiny.pt", format="caffe")
    with pytest.raises(CheckpointError, match="not a vcl checkpoint"):
        import_checkpoint(tmp_path / "tiny.pt", format="vcl")
