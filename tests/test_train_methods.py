"""Methods: registry, hyperparameters, views, and one training step each on random clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.methods import create_method, list_methods, method_hparams
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
METHODS = ("simclr", "moco", "tclr", "fame")


def _method(name: str, **kw):
    torch.manual_seed(0)
    if name in ("moco", "fame"):
        kw.setdefault("queue_size", 32)
    return create_method(name, backbone=create_backbone("r3d_small"), spec=SPEC, seed=0, **kw)


def test_registry_lists_and_rejects():
    assert set(METHODS) <= set(list_methods())
    assert all(list_methods()[m] for m in METHODS)
    with pytest.raises(KeyError, match="valid methods: .*simclr"):
        method_hparams("nope")
    with pytest.raises(ValueError, match="no hyperparameter"):
        method_hparams("simclr", queue_size=3)
    with pytest.raises(ValueError, match="temperature"):
        method_hparams("moco", temperature=0)
    with pytest.raises(ValueError, match="weighting"):
        method_hparams("tclr", weighting="both")


def test_paper_defaults():
    assert method_hparams("moco").temperature == 0.2 and method_hparams("moco").queue_size == 65536
    assert method_hparams("moco").momentum == 0.999 and method_hparams("moco").mlp
    fame = method_hparams("fame")
    assert (fame.temperature, fame.queue_size, fame.symmetric, fame.beta) == (0.1, 2048, True, 0.5)
    assert method_hparams("simclr").temperature == 0.1
    assert method_hparams("tclr").temperature == 0.1 and method_hparams("tclr").weighting == "paper"


def test_tclr_views_tile_the_global_span():
    spec = ClipSpec(frames_per_clip=16, frame_step=2)
    m = create_method("tclr", backbone=create_backbone("r3d_small"), spec=spec)
    ts = np.arange(200) / 25.0
    windows = m.views(ts, np.random.default_rng(0))
    assert len(windows) == 10
    g = windows[0].indices
    assert np.array_equal(windows[1].indices, g) and np.all(np.diff(g) == 4)
    for j in range(4):
        local = windows[2 + 2 * j].indices
        assert np.array_equal(local, windows[3 + 2 * j].indices)
        assert np.array_equal(local, g[0] + 16 * j + np.arange(16))
    short = m.views(np.arange(20) / 25.0, np.random.default_rng(0))  # shorter than the span: clamped
    assert all(w.indices.max() <= 19 for w in short)


@pytest.mark.parametrize("name", METHODS)
def test_training_step_gives_finite_loss_and_gradients(name):
    m = _method(name)
    nviews = len(m.views(np.arange(60) / 25.0, np.random.default_rng(0)))
    assert nviews == m.num_views
    x = torch.rand(4, nviews, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    out = m.training_step(x, 0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="expected"):
        m.training_step(x[:, :1], 1)


def test_step_is_reproducible_from_seed_and_step():
    x = torch.rand(4, 2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = _method("simclr"), _method("simclr")
    assert torch.equal(a.training_step(x, 5)["loss"], b.training_step(x, 5)["loss"])
    assert not torch.equal(a.training_step(x, 5)["loss"], a.training_step(x, 6)["loss"])


@pytest.mark.parametrize("name", ["moco", "fame"])
def test_moco_updates_queue_and_key_encoder(name):
    m = _method(name)
    x = torch.rand(4, 2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    keys, key_w = m.queue.keys.clone(), next(m.encoder_k.parameters()).clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    m.training_step(x, 0)["loss"].backward()
    opt.step()
    pushed = 8 if m.hparams.symmetric else 4
    assert int(m.queue.ptr) == pushed
    assert not torch.equal(m.queue.keys[:pushed], keys[:pushed]) and torch.equal(m.queue.keys[pushed:], keys[pushed:])
    assert all(not p.requires_grad for p in m.encoder_k.parameters())
    m.training_step(x, 1)
    assert not torch.equal(next(m.encoder_k.parameters()), key_w)  # momentum update moved it
    assert "queue.keys" in m.state_dict() and "encoder_k.head.net.0.weight" in m.state_dict()
