"""VCLR and long/short decomposition methods: views, steps, state, and a vcl-train + vcl-export run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from train_fixtures import TINY, synth_data  # noqa: F401

from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.methods import create_method, method_hparams
from training.methods.longshort import FEATURE_PARTS, LongShortClips, ShortViewAggregator, feature_range
from training.methods.vclr import SegmentClips
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)


def make(name: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)  # same backbone and head initialisation for the same seed
    return create_method(name, backbone=create_backbone("r3d_small"), spec=SPEC, seed=seed, **kw)


def clips_for(method: torch.nn.Module, batch: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, method.num_views, 3, 4, 32, 32, generator=g)


# ----------------------------------------------------------------------------------------- vclr


def test_segment_clips_draw_two_clips_per_segment() -> None:
    ts = np.arange(300) / 30.0
    windows = SegmentClips(SPEC)(ts, np.random.default_rng(0))
    assert len(windows) == 8
    starts = [int(w.indices[0]) for w in windows]
    for j in range(3):  # q_j and k_j start inside segment j, at distinct frames
        lo, hi = 100 * j, 100 * (j + 1)
        assert lo <= starts[j] < hi and lo <= starts[3 + j] < hi and starts[j] != starts[3 + j]
        assert windows[j].indices.tolist() == list(range(starts[j], starts[j] + 8, 2))
    assert windows[6].indices.tolist() == windows[0].indices.tolist()
    assert windows[7].indices.tolist() == windows[2].indices.tolist()
    short = SegmentClips(SPEC)(np.arange(5) / 30.0, np.random.default_rng(0))  # shorter than a clip
    assert all(int(w.indices.max()) <= 4 for w in short)


@pytest.mark.slow
def test_vclr_step_is_finite_reproducible_and_updates_queues() -> None:
    a, b = make("vclr", queue_size=16), make("vclr", queue_size=16)
    x = clips_for(a)
    out = a.training_step(x, step=3)
    out["loss"].backward()
    assert set(out) >= {"loss", "loss_inter", "loss_intra", "loss_order", "loss_segment", "order_acc"}
    assert torch.isfinite(out["loss"])
    expected = sum(float(out[f"loss_{t}"]) for t in ("inter", "intra", "order", "segment"))
    assert math.isclose(float(out["loss"].detach()), expected, rel_tol=1e-5)
    grads = [p.grad for p in a.backbone.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert a.order_classifier.weight.grad is not None
    again = b.training_step(x, step=3)
    assert float(again["loss"].detach()) == float(out["loss"].detach())
    state = a.state_dict()
    assert {"queue.keys", "queue.ptr", "segment_queue.keys", "segment_queue.ptr"} <= set(state)
    assert int(state["queue.ptr"]) == 3 * 4 and int(state["segment_queue.ptr"]) == 4
    assert any(k.startswith("heads_k.") for k in state) and any(k.startswith("encoder_k.") for k in state)
    other = b.training_step(x, step=4)  # another step draws other augmentations and shuffles
    assert float(other["loss"].detach()) != float(out["loss"].detach())


def test_vclr_options_official_queue_and_dense_term() -> None:
    m = make("vclr", queue_size=16, queue_init="official", order_norm="official", dense_weight=1.0)
    stdv = 1 / math.sqrt(128 / 3)
    keys = m.queue.keys
    assert float(keys.abs().max()) <= stdv and not torch.allclose(keys.norm(dim=1), torch.ones(16))
    out = m.training_step(clips_for(m), step=0)
    assert torch.isfinite(out["loss"]) and "loss_dense" in out
    assert int(m.dense_queue.ptr) == 4


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"temperature_intra": 0.0}, "temperature_intra"),
        ({"order_weight": -1.0}, "order_weight"),
        ({"order_norm": "frames"}, "order_norm"),
        ({"queue_init": "zeros"}, "queue_init"),
        ({"symmetric": True}, "symmetric"),
        ({"queue_size": 0}, "queue_size"),
    ],
)
def test_vclr_bad_hyperparameters(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        method_hparams("vclr", **kw)


def test_vclr_defaults_are_the_official_ones() -> None:
    hp = method_hparams("vclr")
    assert (hp.temperature, hp.temperature_intra, hp.queue_size, hp.momentum) == (0.1, 0.1, 131072, 0.999)
    assert (hp.inter_weight, hp.intra_weight, hp.order_weight, hp.segment_weight) == (1.0, 1.0, 1.0, 1.0)


# ------------------------------------------------------------------------------------ longshort


def test_long_short_clips_tile_the_long_span() -> None:
    windows = LongShortClips(SPEC, num_short=3)(np.arange(100) / 25.0, np.random.default_rng(0))
    long, shorts = windows[0].indices.tolist(), [w.indices.tolist() for w in windows[1:]]
    start = long[0]
    assert long == [start + 6 * i for i in range(4)]
    assert shorts == [[start + 8 * j + 2 * i for i in range(4)] for j in range(3)]


def test_feature_parts_and_aggregator() -> None:
    assert feature_range("stationary", 64) == (0, 32) and feature_range("non-stationary", 64) == (32, 64)
    assert feature_range("all", 64) == (0, 64) and FEATURE_PARTS == ("all", "stationary", "non-stationary")
    with pytest.raises(ValueError, match="features must be one of"):
        feature_range("static", 64)
    x = torch.randn(5, 3, 8)
    assert ShortViewAggregator(8, 3, "mlp")(x).shape == (5, 8)
    assert torch.equal(ShortViewAggregator(8, 3, "mean")(x), x.mean(dim=1))
    swapped = x[:, [1, 0, 2]]
    mlp = ShortViewAggregator(8, 3, "mlp")
    assert not torch.allclose(mlp(x), mlp(swapped))  # the MLP aggregator sees time order


@pytest.mark.parametrize("aggregator", ["mlp", "mean"])
def test_longshort_step_is_finite_and_reproducible(aggregator: str) -> None:
    a, b = make("longshort", num_short=2, aggregator=aggregator), make("longshort", num_short=2, aggregator=aggregator)
    x = clips_for(a)
    out = a.training_step(x, step=2)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and {"loss_stationary", "loss_non_stationary"} <= set(out)
    grads = [p.grad for p in a.backbone.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert float(b.training_step(x, step=2)["loss"].detach()) == float(out["loss"].detach())
    assert any(k.startswith("aggregator.") for k in a.state_dict()) == (aggregator == "mlp")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"num_short": 1}, "num_short"),
        ({"aggregator": "gru"}, "aggregator"),
        ({"stationary_weight": -1.0}, "stationary_weight"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_longshort_bad_hyperparameters(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        method_hparams("longshort", **kw)


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.slow
@pytest.mark.parametrize(("method", "sets"), [("vclr", ["queue_size=16"]), ("longshort", ["num_short=2"])])
def test_method_trains_and_exports(method: str, sets: list[str], synth_data, tmp_path) -> None:  # noqa: F811
    from export.cli import main as export_main

    out = tmp_path / "run"
    extra = [a for s in sets for a in ("--set", s)]
    r = CliRunner().invoke(train_main, ["--method", method, "--data", str(synth_data), "--out", str(out),
                                        "--epochs", "1", *TINY, *extra])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["method"] == method and ckpt["global_step"] == 2
    r = CliRunner().invoke(export_main, [str(out / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert f'"method": "{method}"' in (tmp_path / "m.json").read_text()
