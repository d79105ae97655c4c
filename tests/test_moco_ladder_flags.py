"""MoCo / FAME flags the ladder turns on (off by default, as in the papers): head_bn, batch_negatives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.methods import create_method
from training.methods.moco import moco_loss_extra_negatives
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=1, resize_size=32, crop_size=32)


def _method(name: str, **kw):
    torch.manual_seed(0)
    return create_method(name, backbone=create_backbone("r3d_small"), spec=SPEC, seed=0, queue_size=16, **kw)


def _bn_layers(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm1d) for m in module.modules())


@pytest.mark.parametrize("name", ["moco", "fame"])
def test_head_bn_is_off_by_default_and_puts_bn_in_both_encoders_heads(name):
    assert _bn_layers(_method(name).encoder_q) == 0  # MoCo v2 / FAME: no BN in the head
    method = _method(name, head_bn=True)
    assert _bn_layers(method.encoder_q) == _bn_layers(method.encoder_k) == 1
    clips = torch.rand(4, 2, 3, 4, 32, 32)
    method.train()
    out = method.training_step(clips, 0)  # shuffle-BN sub-batches of 2 still normalise
    assert torch.isfinite(out["loss"])


def test_head_bn_spreads_the_random_init_embeddings():
    """Why the ladder turns it on: a random init maps different videos to nearly the same
    direction without it (the queue then holds keys as close as the positive)."""
    torch.manual_seed(2)
    clips = torch.rand(16, 3, 4, 32, 32)

    def mean_cosine(method) -> float:
        method.train()
        with torch.no_grad():
            z = method.encoder_q(method.augment(clips, torch.Generator().manual_seed(0)))
        sim = z @ z.t()
        return float((sim.sum() - sim.diagonal().sum()) / (16 * 15))

    plain, with_bn = mean_cosine(_method("moco")), mean_cosine(_method("moco", head_bn=True))
    assert plain > 0.5 and with_bn < plain - 0.3, (plain, with_bn)


def test_batch_negatives_adds_the_other_rows_keys_and_nothing_else():
    from training.losses.moco import moco_loss

    g = torch.Generator().manual_seed(0)
    q, k = [torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1) for _ in range(2)]
    queue = torch.nn.functional.normalize(torch.randn(7, 8, generator=g), dim=1)
    # row j's negatives: the queue plus every other row's key (its own key is only its positive)
    rows = [moco_loss(q[j:j + 1], k[j:j + 1], torch.cat([queue, k[torch.arange(5) != j]]), 0.2) for j in range(5)]
    assert torch.allclose(moco_loss_extra_negatives(q, k, queue, 0.2, batch_keys=True), torch.stack(rows).mean())
    assert torch.allclose(moco_loss_extra_negatives(q[:1], k[:1], queue, 0.2, batch_keys=True),
                          moco_loss(q[:1], k[:1], queue, 0.2))
    method = _method("moco", batch_negatives=True)
    method.train()
    assert torch.isfinite(method.training_step(torch.rand(4, 2, 3, 4, 32, 32), 0)["loss"])


@pytest.mark.parametrize("name", ["moco", "fame"])
def test_reversed_clips_through_the_query_encoder_carry_gradient(name):
    """reverse_encoder="query": the reversed clips are negatives with gradient (the key-encoder
    way gives the loss no gradient through them); a static video is its own reversal, so the
    loss with the flag is higher than without."""
    torch.manual_seed(1)
    clips = torch.rand(4, 1, 3, 1, 32, 32).expand(4, 2, 3, 4, 32, 32).contiguous()
    losses = {}
    for flag in (False, True):
        method = _method(name, reverse_negatives=flag, reverse_encoder="query")
        method.train()
        losses[flag] = method.training_step(clips, 0)["loss"]
    assert losses[True] > losses[False]
    g = torch.Generator().manual_seed(0)
    q, k, extra = [torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1) for _ in range(3)]
    extra.requires_grad_(True)
    moco_loss_extra_negatives(q, k, torch.zeros(0, 8), 0.2, extra=extra).backward()
    assert extra.grad is not None and extra.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reverse_encoder"):
        _method("moco", reverse_encoder="both")


@pytest.mark.parametrize(("symmetric", "views"), [(False, 1), (True, 2)])
def test_query_encoder_reversal_reverses_both_views_when_symmetric(monkeypatch, symmetric, views):
    """The ladder's MoCo (reverse_encoder="query", symmetric): each step's negatives hold the
    reversals of both views' clips, through the online encoder, so both queries meet their own
    clip played backwards (as SimCLR's anchors do)."""
    method = _method("moco", reverse_negatives=True, reverse_encoder="query", symmetric=symmetric)
    method.train()
    seen = []
    original = type(method).reversed_queries

    def spy(self, clips, groups, perm):
        out = original(self, clips, groups, perm)
        seen.append((len(clips), out.shape[0], out.requires_grad))
        return out

    monkeypatch.setattr(type(method), "reversed_queries", spy)
    method.training_step(torch.rand(4, 2, 3, 4, 32, 32), 0)["loss"].backward()
    assert seen == [(views, 4 * views, True)]


def test_key_view_reversal_gives_each_pair_its_own_key_clip_backwards(monkeypatch):
    """reversed_views="key": pair (a, b) meets b's clip reversed, pair (b, a) meets a's; the
    query's own (for FAME: merged) clip is not among its reversed negatives."""
    method = _method("fame", reverse_negatives=True, reverse_encoder="query", symmetric=True, reversed_views="key")
    method.train()
    seen = []
    original = type(method).reversed_queries

    def spy(self, clips, groups, perm):
        seen.append([c.clone() for c in clips])
        return original(self, clips, groups, perm)

    monkeypatch.setattr(type(method), "reversed_queries", spy)
    clips = torch.rand(4, 2, 3, 4, 32, 32)
    method.training_step(clips, 0)["loss"].backward()
    assert [len(c) for c in seen] == [1, 1]
    g = method.generator(0)
    merged_query = method.query_view(clips[:, 0], g)
    key_view = method.augment(clips[:, 1], g)
    assert torch.equal(seen[0][0], key_view) and torch.equal(seen[1][0], merged_query)
    with pytest.raises(ValueError, match="reversed_views"):
        _method("moco", reversed_views="query")


def test_the_ladder_moco_settings_build_and_step():
    """benchmarks/reproduce.py's MoCo / FAME overrides are valid hparams of both methods."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce_settings", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("moco", "fame"):
        settings = {k: v for k, v in mod.METHOD_ARGS[name].items() if k != "queue_size"}
        assert settings["reverse_encoder"] == "query" and settings["symmetric"] is True
        method = _method(name, **settings)
        method.train()
        assert torch.isfinite(method.training_step(torch.rand(4, 2, 3, 4, 32, 32), 0)["loss"])
