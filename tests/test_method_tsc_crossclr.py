"""Methods ``kcl``, ``tsc`` and ``crossclr``: hyperparameters, one training step, reproducibility,
state, and tiny ``vcl-train`` runs (TSC on a long-tailed split, CrossCLR with paired features)
exported with ``vcl-export``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from train_fixtures import TINY, synth_data  # noqa: F401

from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.data.layouts import load_layout
from training.data.long_tail import write_long_tail_split
from training.losses.tsc import sample_class_positives, tsc_loss_terms
from training.methods import create_method, list_methods, method_class, method_hparams
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
SMALL = {
    "kcl": {"queue_size": 16, "num_classes": 3},
    "tsc": {"queue_size": 16, "num_classes": 3, "target_steps": 50},
    "crossclr": {"queue_size": 8, "pair_dim": 6, "proj_dim": 16, "pair_hidden_dim": 8},
}
LABELS = torch.tensor([0, 2, 0, 1])


def _method(name: str, **kw):
    torch.manual_seed(0)
    return create_method(name, backbone=create_backbone("r3d_small"), spec=SPEC, seed=0, **{**SMALL[name], **kw})


def _clips(views: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(4, views, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def _pairs(seed: int = 0) -> torch.Tensor:
    return torch.rand(4, 6, generator=torch.Generator().manual_seed(seed))


def _step(m, step: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    if m.name == "crossclr":
        return m.training_step(_clips(1, seed), step, pairs=_pairs(seed))
    return m.training_step(_clips(2, seed), step, LABELS)


def test_registered_with_paper_defaults():
    assert all(list_methods()[n] for n in ("kcl", "tsc", "crossclr"))
    kcl, tsc = method_hparams("kcl"), method_hparams("tsc")
    assert (kcl.temperature, kcl.queue_size, kcl.momentum, kcl.num_positive, kcl.mlp, kcl.proj_dim) == (
        0.07, 65536, 0.999, 6, True, 128)  # fmt: skip
    assert (kcl.jitter_p, kcl.brightness, kcl.hue, kcl.grayscale_p, kcl.blur_p) == (1.0, 0.4, 0.0, 0.0, 0.0)
    assert (tsc.target_weight, tsc.centre_momentum, tsc.normalization, tsc.target_start_step) == (0.2, 0.9, "paper", 0)
    assert (tsc.target_steps, tsc.target_lr) == (10000, 1e-3)
    assert method_class("tsc").optim_defaults == {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4}
    assert method_class("kcl").batch_keys == ("labels",) and method_class("tsc").batch_keys == ("labels",)
    c = method_hparams("crossclr")
    assert (c.temperature, c.negative_weight, c.score_threshold, c.weight_temperature, c.queue_size, c.proj_dim) == (
        0.03, 0.8, 0.9, 0.0035, 3000, 384)  # fmt: skip
    assert c.variant == "paper" and method_class("crossclr").batch_keys == ("pairs",) and method_class("crossclr").num_views == 1
    assert method_class("crossclr").optim_defaults == {"optimizer": "adam", "lr": 9e-4, "weight_decay": 0.0}


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("kcl", dict(num_positive=-1), "num_positive"),
        ("kcl", dict(num_classes=-1), "num_classes"),
        ("kcl", dict(symmetric=True), "symmetric"),
        ("kcl", dict(temperature=0.0), "temperature"),
        ("tsc", dict(target_weight=-1.0), "target_weight"),
        ("tsc", dict(normalization="both"), "normalization"),
        ("tsc", dict(centre_momentum=1.5), "centre_momentum"),
        ("tsc", dict(target_steps=-1), "target_steps"),
        ("tsc", dict(target_start_step=-1), "target_start_step"),
        ("crossclr", dict(negative_weight=-0.5), "negative_weight"),
        ("crossclr", dict(score_threshold=0.0), "score_threshold"),
        ("crossclr", dict(weight_temperature=0.0), "weight_temperature"),
        ("crossclr", dict(variant="coot"), "variant"),
        ("crossclr", dict(queue_size=-1), "queue_size"),
        ("crossclr", dict(pair_dim=-2), "pair_dim"),
    ],
)
def test_hyperparameter_validation(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        method_hparams(name, **kwargs)


def test_unknown_sizes_are_errors():
    with pytest.raises(ValueError, match="num_classes is unknown"):
        _method("tsc", num_classes=0)
    with pytest.raises(ValueError, match="pair_dim is unknown"):
        _method("crossclr", pair_dim=0)


@pytest.mark.parametrize("name", ["kcl", "tsc", "crossclr"])
def test_training_step_gives_finite_loss_and_gradients(name):
    m = _method(name)
    assert len(m.views(np.arange(60) / 25.0, np.random.default_rng(0))) == m.num_views
    out = _step(m)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["kcl", pytest.param("tsc", marks=pytest.mark.slow), "crossclr"])
def test_step_is_reproducible_and_state_resumes(name):
    a, b = _method(name), _method(name)
    first = _step(a, 3)["loss"]
    assert torch.equal(first, _step(b, 3)["loss"])
    resumed = _method(name)
    resumed.load_state_dict(a.state_dict())
    assert torch.equal(_step(a, 4, seed=1)["loss"], _step(resumed, 4, seed=1)["loss"])
    assert not torch.equal(_step(_method(name), 5)["loss"], first)  # other step, other draws


@pytest.mark.slow
def test_kcl_queue_keeps_the_labels_of_its_keys_in_state():
    m = _method("kcl")
    assert m.queue_labels.tolist() == [-1] * 16
    for i in range(5):  # 20 keys through a 16-slot ring
        _step(m, i)
    assert int(m.queue.ptr) == 4 and m.queue_labels.tolist() == LABELS.tolist() * 4
    sd = m.state_dict()
    assert torch.equal(sd["queue_labels"], m.queue_labels)
    with pytest.raises(ValueError, match="needs labels"):
        m.training_step(_clips(), 0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        m.training_step(_clips(), 0, torch.tensor([0, 1, 2, 3]))


def test_kcl_terms_are_the_loss_with_the_generator_draws():
    m = _method("kcl")
    m.queue_labels.copy_(torch.arange(16) % 3)
    g = torch.Generator().manual_seed(0)
    q, k = torch.nn.functional.normalize(torch.randn(4, 128, generator=g), dim=1), torch.randn(4, 128, generator=g)
    k = torch.nn.functional.normalize(k, dim=1)
    out = m.contrastive_terms(q, k, m.queue(), step=0, generator=torch.Generator().manual_seed(7), labels=LABELS)
    pos = sample_class_positives(LABELS, m.queue_labels, 6, torch.Generator().manual_seed(7))
    assert torch.equal(out["loss"], tsc_loss_terms(q, k, m.queue(), pos, temperature=0.07)["loss"])


def test_tsc_targets_centres_and_schedule():
    m = _method("tsc", target_start_step=2)
    again = _method("tsc", target_start_step=2)
    assert torch.equal(m.targets, again.targets)  # a function of the seed
    assert torch.allclose(m.targets.norm(dim=1), torch.ones(3), atol=1e-5)
    sd_keys = set(m.state_dict())
    assert {"targets", "centres", "assignment", "queue_labels", "queue.keys"} <= sd_keys
    centres = m.centres.clone()
    early = _step(m, 1)
    assert float(early["loss_target"].detach()) == 0.0 and torch.equal(m.centres, centres)  # KCL phase
    late = _step(m, 2)
    assert float(late["loss_target"].detach()) > 0.0 and not torch.equal(m.centres, centres)
    assert sorted(m.assignment.tolist()) == [0, 1, 2]
    assert not torch.equal(m.centres[1], centres[1]) and torch.allclose(m.centres.norm(dim=1), torch.ones(3))


def test_crossclr_fills_its_queue_and_checks_pairs():
    m = _method("crossclr")
    assert int(m.filled) == 0
    _step(m, 0)
    assert int(m.filled) == 4 and int(m.queue_pair.ptr) == 4
    _step(m, 1)
    _step(m, 2)
    assert int(m.filled) == 8  # capped at queue_size
    sd = m.state_dict()
    assert {"filled", "queue_video.keys", "queue_pair_inputs.keys"} <= set(sd) and sd["queue_pair_inputs.keys"].shape == (8, 6)
    with pytest.raises(ValueError, match="paired features"):
        m.training_step(_clips(1), 0)
    with pytest.raises(ValueError, match="pairs"):
        m.training_step(_clips(1), 0, pairs=torch.rand(4, 5))
    out = _method("crossclr", queue_size=0, variant="official").training_step(_clips(1), 0, pairs=_pairs())
    assert torch.isfinite(out["loss"])


def _train_and_export(name: str, data: Path, tmp_path: Path, extra: list[str]) -> dict:
    from export.cli import main as export_main

    out = tmp_path / "run"
    r = CliRunner().invoke(train_main, ["--method", name, "--data", str(data), "--out", str(out), "--epochs", "1",
                                        *TINY, *extra])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["method"] == name and ckpt["global_step"] >= 1
    r = CliRunner().invoke(export_main, [str(out / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.onnx").is_file() and f'"method": "{name}"' in (tmp_path / "m.json").read_text()
    return ckpt


@pytest.mark.slow
def test_kcl_trains_and_exports(synth_data, tmp_path):  # noqa: F811
    ckpt = _train_and_export("kcl", synth_data, tmp_path, ["--set", "queue_size=16"])
    assert ckpt["global_step"] == 2 and ckpt["config"]["method_args"]["num_classes"] == 2


def test_tsc_trains_on_a_long_tailed_split_and_exports(synth_data, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    lt = write_long_tail_split(data, 4.0, seed=0)
    assert sorted(lt.counts.values()) == [1, 4] and len(load_layout(data, split=lt.split)[0]) == 5
    ckpt = _train_and_export("tsc", data, tmp_path, ["--set", f"split={lt.split}", "--set", "queue_size=16",
                                                     "--set", "target_steps=50"])
    assert ckpt["global_step"] == 1 and ckpt["config"]["split"] == lt.split  # 5 videos: one batch of 4
    assert ckpt["method_state"]["targets"].shape == (2, 128)


def _pair_file(data: Path, path: Path, drop: int | None = None) -> Path:
    """Noisy class-dependent 8-d vectors for every train video, keyed by path relative to ``data``."""
    items, _ = load_layout(data)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 8))
    arrays = {Path(i.path).relative_to(data).as_posix(): (centres[i.label] + 0.3 * rng.normal(size=8)).astype(np.float32)
              for n, i in enumerate(items) if n != drop}
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_crossclr_trains_with_paired_features_and_exports(synth_data, tmp_path):  # noqa: F811
    pairs = _pair_file(synth_data, tmp_path / "pairs.npz")
    ckpt = _train_and_export("crossclr", synth_data, tmp_path, ["--set", f"pair_features={pairs}",
                                                                "--set", "queue_size=8"])
    assert ckpt["global_step"] == 2 and ckpt["config"]["method_args"]["pair_dim"] == 8


def test_crossclr_names_a_video_without_pairs(synth_data, tmp_path):  # noqa: F811
    missing = load_layout(synth_data)[0][3].path
    pairs = _pair_file(synth_data, tmp_path / "pairs.npz", drop=3)
    base = ["--method", "crossclr", "--data", str(synth_data), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY]
    r = CliRunner().invoke(train_main, [*base, "--set", f"pair_features={pairs}"])
    assert r.exit_code != 0 and missing in r.output and "relative to" in r.output
    r = CliRunner().invoke(train_main, base)
    assert r.exit_code != 0 and "pair_features=FILE.npz" in r.output
