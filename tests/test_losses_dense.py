"""Dense contrast (DenseCL): loss vs a loop reference, correspondence, optimisation, validation,
and the term on MoCo-based methods (--dense-weight)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from train_fixtures import TINY, synth_data  # noqa: F401

from training.losses.dense import (
    DenseContrastLoss,
    dense_contrast_loss,
    dense_correspondence,
)
from training.methods.heads import DenseHead, pooled_dense_keys


def unit(*shape: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def ref_match(q_feats: torch.Tensor, k_feats: torch.Tensor) -> list[list[int]]:
    """argmax_j cos(q_i, k_j) per clip, with loops."""
    out = []
    for qb, kb in zip(q_feats.tolist(), k_feats.tolist()):
        row = []
        for qi in qb:
            cos = [dot(qi, kj) / math.sqrt(dot(qi, qi) * dot(kj, kj)) for kj in kb]
            row.append(max(range(len(cos)), key=cos.__getitem__))
        out.append(row)
    return out


def ref_dense(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, match: list[list[int]], t: float) -> float:
    """DenseCL eq. 2: mean over clips b and locations l of
    -log exp(r.t+/T) / (exp(r.t+/T) + sum_j exp(r.n_j/T)), t+ = k[b, match[b][l]]."""
    total, count = 0.0, 0
    for b, (qb, kb) in enumerate(zip(q.tolist(), k.tolist())):
        for li, r in enumerate(qb):
            pos = math.exp(dot(r, kb[match[b][li]]) / t)
            neg = sum(math.exp(dot(r, n) / t) for n in queue.tolist())
            total += -math.log(pos / (pos + neg))
            count += 1
    return total / count


@pytest.mark.parametrize("batch,locations,key_locations,queue_size", [(1, 1, 1, 1), (2, 6, 4, 5), (3, 8, 8, 16)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_matches_loop_reference(batch, locations, key_locations, queue_size, temperature):
    g = torch.Generator().manual_seed(batch * 100 + locations)
    q, k = unit(batch, locations, 5, g=g), unit(batch, key_locations, 5, g=g)
    queue = unit(queue_size, 5, g=g)
    q_feats = torch.randn(batch, locations, 7, generator=g, dtype=torch.float64)
    k_feats = torch.randn(batch, key_locations, 7, generator=g, dtype=torch.float64)
    match = ref_match(q_feats, k_feats)
    assert dense_correspondence(q_feats, k_feats).tolist() == match
    got = dense_contrast_loss(q, k, queue, torch.tensor(match), temperature)
    assert math.isclose(float(got), ref_dense(q, k, queue, match, temperature), rel_tol=1e-6)
    module = DenseContrastLoss(temperature=temperature)
    assert math.isclose(float(module(q, k, queue, q_feats, k_feats)), float(got), rel_tol=1e-12)


def test_correspondence_follows_features_not_projections():
    """The positive is picked by backbone features (DenseCL Sec. 3.3), whatever the projections say."""
    g = torch.Generator().manual_seed(0)
    k_feats = torch.randn(1, 4, 6, generator=g, dtype=torch.float64)
    q_feats = k_feats[:, [2, 0, 3, 1]] * 3.0  # same directions, shuffled and scaled
    assert dense_correspondence(q_feats, k_feats).tolist() == [[2, 0, 3, 1]]


def test_optimisation_lowers_loss():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 6, 8, generator=g, requires_grad=True)
    k, queue = unit(2, 5, 8, g=g).float(), unit(12, 8, g=g).float()
    match = torch.randint(0, 5, (2, 6), generator=g)
    opt = torch.optim.Adam([q], lr=0.1)
    losses = []
    for _ in range(20):
        loss = dense_contrast_loss(F.normalize(q, dim=-1), k, queue, match, 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_keys_and_queue_get_no_gradient():
    g = torch.Generator().manual_seed(4)
    q, k, queue = (unit(*s, g=g).requires_grad_() for s in [(2, 3, 4), (2, 3, 4), (5, 4)])
    dense_contrast_loss(q, k, queue, torch.zeros(2, 3, dtype=torch.long)).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_validation_errors():
    g = torch.Generator().manual_seed(5)
    q, k, queue = unit(2, 3, 4, g=g), unit(2, 3, 4, g=g), unit(5, 4, g=g)
    match = torch.zeros(2, 3, dtype=torch.long)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            DenseContrastLoss(temperature=bad)
    with pytest.raises(ValueError, match="match must be"):
        dense_contrast_loss(q, k, queue, match[:, :2])
    with pytest.raises(ValueError, match="match indices"):
        dense_contrast_loss(q, k, queue, match + 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        dense_contrast_loss(q, k, unit(5, 3, g=g), match)
    with pytest.raises(ValueError, match="B x L x P"):
        dense_contrast_loss(q[0], k, queue, match)
    with pytest.raises(ValueError, match="give match"):
        DenseContrastLoss()(q, k, queue)


def test_dense_head_and_pooled_keys_shapes():
    head = DenseHead(6, 6, 4)
    out = head(torch.randn(2, 6, 2, 3, 3))
    assert out.shape == (2, 18, 4) and torch.allclose(out.norm(dim=-1), torch.ones(2, 18))
    pooled = pooled_dense_keys(out)
    assert pooled.shape == (2, 4) and torch.allclose(pooled, F.normalize(out.mean(1), dim=1))


def _moco(name: str, **kw):
    from training.methods import create_method
    from training.models import create_backbone
    from vcl_infer.clips.spec import ClipSpec

    spec = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
    return create_method(name, backbone=create_backbone("r3d_small"), spec=spec, seed=0, queue_size=16, **kw)


@pytest.mark.parametrize("name", ["moco", "fame"])
def test_dense_weight_adds_the_term_to_moco_methods(name):
    plain, dense = _moco(name), _moco(name, dense_weight=0.5)
    x = torch.rand(4, 2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    out = dense.training_step(x, 0)
    assert torch.isclose(out["loss"], out["loss_global"] + 0.5 * out["loss_dense"])
    # the global part is plain MoCo's loss: same weights, seed and step
    dense_free = {k: v for k, v in dense.state_dict().items() if "dense" not in k}
    assert set(dense_free) == set(plain.state_dict())
    fresh = _moco(name, dense_weight=0.5)
    plain.load_state_dict({k: v for k, v in fresh.state_dict().items() if "dense" not in k})
    assert torch.isclose(fresh.training_step(x, 0)["loss_global"], plain.training_step(x, 0)["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in dense.encoder_q.dense_head.parameters())
    pushed = 8 if dense.hparams.symmetric else 4
    assert int(dense.dense_queue.ptr) == pushed and "dense_queue.keys" in dense.state_dict()
    assert "encoder_k.dense_head.net.0.weight" in dense.state_dict()


def test_cli_dense_weight_trains_exports_and_refuses_non_moco(synth_data, tmp_path):  # noqa: F811
    from export.cli import main as export_main
    from training.checkpoint import load_checkpoint
    from training.cli import main as train_main

    out = tmp_path / "run"
    r = CliRunner().invoke(train_main, ["--method", "moco", "--data", str(synth_data), "--out", str(out),
                                        "--epochs", "1", *TINY, "--set", "queue_size=16", "--dense-weight", "1.0"])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["config"]["method_args"]["dense_weight"] == 1.0 and "dense_queue.keys" in ckpt["method_state"]
    assert "loss_dense" in (out / "metrics.csv").read_text().splitlines()[0]
    r = CliRunner().invoke(export_main, [str(out / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(train_main, ["--method", "simclr", "--data", str(synth_data), "--out",
                                        str(tmp_path / "bad"), *TINY, "--dense-weight", "1"])
    assert r.exit_code != 0 and "MoCo-based" in r.output and "moco" in r.output
    r = CliRunner().invoke(train_main, ["--method", "moco", "--data", str(synth_data), "--out",
                                        str(tmp_path / "bad2"), *TINY, "--dense-weight", "-1"])
    assert r.exit_code != 0 and "dense_weight" in r.output
