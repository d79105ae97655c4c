"""MoCo / FAME ``head_bn``: BN after the MLP head's hidden layer (off by default, as in the papers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.methods import create_method
from training.models import create_backbone
from vcl_infer.spec import ClipSpec

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
