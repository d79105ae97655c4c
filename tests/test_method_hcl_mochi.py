"""Methods ``hcl`` and ``mochi``: hyperparameters, one training step, reproducibility, state,
and a tiny ``vcl-train`` run exported with ``vcl-export``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from train_fixtures import TINY, synth_data  # noqa: F401

from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.losses.mochi import draw_mochi, mochi_loss
from training.losses.moco import moco_loss
from training.methods import create_method, list_methods, method_class, method_hparams
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
SMALL = {"hcl": {}, "mochi": {"queue_size": 16, "num_hard": 8, "num_mix": 6, "num_query_mix": 3}}


def _method(name: str, **kw):
    torch.manual_seed(0)
    return create_method(name, backbone=create_backbone("r3d_small"), spec=SPEC, seed=0, **{**SMALL[name], **kw})


def _clips(seed: int = 0) -> torch.Tensor:
    return torch.rand(4, 2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_registered_with_paper_defaults():
    assert list_methods()["hcl"] and list_methods()["mochi"]
    hcl = method_hparams("hcl")
    assert (hcl.temperature, hcl.tau_plus, hcl.beta, hcl.estimator, hcl.hidden_dim, hcl.proj_dim) == (
        0.5, 0.1, 1.0, "hard", 512, 128)  # fmt: skip
    assert method_class("hcl").optim_defaults == {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6}
    mochi = method_hparams("mochi")
    assert (mochi.num_hard, mochi.num_mix, mochi.num_query_mix, mochi.query_mix_max) == (1024, 1024, 128, 0.5)
    assert (mochi.temperature, mochi.queue_size, mochi.momentum, mochi.mlp, mochi.mix_start_step) == (
        0.2, 65536, 0.999, True, 0)  # fmt: skip


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("hcl", dict(beta=-1.0), "beta"),
        ("hcl", dict(tau_plus=1.0), "tau_plus"),
        ("hcl", dict(estimator="soft"), "estimator"),
        ("hcl", dict(temperature=0.0), "temperature"),
        ("hcl", dict(hidden_dim=0), "hidden_dim"),
        ("mochi", dict(num_hard=0), "num_hard"),
        ("mochi", dict(num_mix=-1), "num_mix"),
        ("mochi", dict(query_mix_max=1.5), "query_mix_max"),
        ("mochi", dict(mix_start_step=-1), "mix_start_step"),
        ("mochi", dict(queue_size=0), "queue_size"),
    ],
)
def test_hyperparameter_validation(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        method_hparams(name, **kwargs)


@pytest.mark.parametrize("name", ["hcl", "mochi"])
def test_training_step_gives_finite_loss_and_gradients(name):
    m = _method(name)
    assert len(m.views(np.arange(60) / 25.0, np.random.default_rng(0))) == m.num_views == 2
    out = m.training_step(_clips(), 0)
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["pos_sim"])
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="expected"):
        m.training_step(_clips()[:, :1], 1)


@pytest.mark.parametrize("name", ["hcl", "mochi"])
def test_step_is_reproducible_from_seed_and_step(name):
    a, b = _method(name), _method(name)
    x = _clips()
    la, lb = a.training_step(x, 3)["loss"], b.training_step(x, 3)["loss"]
    assert torch.equal(la, lb)
    assert not torch.equal(_method(name).training_step(x, 4)["loss"], la)  # other step, other draws


def test_hcl_state_is_parameters_and_bn_buffers():
    sd = _method("hcl").state_dict()
    assert "head.0.weight" in sd and "head.1.running_mean" in sd and "head.0.bias" not in sd
    assert sd["head.3.weight"].shape == (128, 512)


def test_mochi_enqueues_only_keys_and_keeps_queue_in_state():
    m = _method("mochi")
    before = m.queue.keys.clone()
    m.training_step(_clips(), 0)
    assert int(m.queue.ptr) == 4  # the batch's keys only, no synthetic points
    assert not torch.equal(m.queue.keys[:4], before[:4]) and torch.equal(m.queue.keys[4:], before[4:])
    assert torch.allclose(m.queue.keys[:4].norm(dim=1), torch.ones(4))
    sd = m.state_dict()
    assert torch.equal(sd["queue.keys"], m.queue.keys) and int(sd["queue.ptr"]) == 4
    fresh = _method("mochi")
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.queue.keys, m.queue.keys)


def test_mochi_composes_with_symmetric_and_dense_moco():
    m = _method("mochi", symmetric=True, dense_weight=1.0)
    out = m.training_step(_clips(), 0)
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["loss_dense"])
    assert int(m.queue.ptr) == 8  # both key sets, still no synthetic points


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_mochi_terms_use_generator_draws_and_respect_warm_up():
    m = _method("mochi", mix_start_step=5, queue_size=16, num_hard=32, num_mix=40, num_query_mix=2)
    assert m.mixing_counts(4) == (16, 0, 0) and m.mixing_counts(5) == (16, 16, 2)  # clamped to K
    q, k, queue = _unit(4, 128, 0), _unit(4, 128, 1), _unit(16, 128, 2)
    warm = m.contrastive_terms(q, k, queue, step=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(warm["loss"], moco_loss(q, k, queue, 0.2))
    mixed = m.contrastive_terms(q, k, queue, step=5, generator=torch.Generator().manual_seed(0))
    draws = draw_mochi(4, 16, 16, 2, query_mix_max=0.5, generator=torch.Generator().manual_seed(0))
    expected = mochi_loss(q, k, queue, 0.2, num_hard=16, num_mix=16, num_query_mix=2, draws=draws)
    assert torch.equal(mixed["loss"], expected) and mixed["loss"] > warm["loss"]


@pytest.mark.parametrize("name", ["hcl", "mochi"])
def test_vcl_train_and_export(name, synth_data, tmp_path):  # noqa: F811
    from export.cli import main as export_main

    out = tmp_path / "run"
    extra = ["--set", "queue_size=16", "--set", "num_hard=8", "--set", "num_mix=8"] if name == "mochi" else []
    r = CliRunner().invoke(
        train_main, ["--method", name, "--data", str(synth_data), "--out", str(out), "--epochs", "1", *TINY, *extra]
    )
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["method"] == name and ckpt["global_step"] == 2
    r = CliRunner().invoke(export_main, [str(out / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.onnx").is_file() and f'"method": "{name}"' in (tmp_path / "m.json").read_text()
