"""The method contract: a method with a new per-item input needs only its own code and the
registry (``batch_keys`` + ``prepare``), never an edit of the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import pytest
import torch
from train_fixtures import synth_data  # noqa: F401

from training.config import TrainConfig
from training.errors import TrainError
from training.loop import train
from training.methods import register_method
from training.methods.base import Prepared
from training.methods.registry import METHODS
from training.methods.simclr import SimCLR, SimCLRHparams

NAME = "weighted_simclr_example"


@dataclass(frozen=True)
class WeightedHparams(SimCLRHparams):
    """SimCLR plus the example's own hyperparameter."""

    weight_scale: float = 1.0


class WeightedSimCLR(SimCLR):
    """SimCLR whose loss is weighted by a per-video number the data set supplies (the example)."""

    Hparams: ClassVar[type] = WeightedHparams
    batch_keys: ClassVar[tuple[str, ...]] = ("name_length",)
    seen: ClassVar[list[torch.Tensor]] = []

    @classmethod
    def prepare(cls, config: Any, items: Sequence[Any], classes: Sequence[str] | None) -> Prepared:
        if config.method_args.get("weight_scale", 1.0) < 0:
            raise TrainError("weight_scale must be >= 0")
        lengths = torch.tensor([float(len(Path(it.path).name)) for it in items])
        return Prepared(inputs={"name_length": lengths})

    def training_step(self, clips: torch.Tensor, step: int, name_length: torch.Tensor | None = None) -> dict:
        assert name_length is not None
        type(self).seen.append(name_length.detach().cpu())
        out = super().training_step(clips, step)
        out["loss"] = out["loss"] * self.hparams.weight_scale * (name_length.mean() / name_length.mean().detach())
        return out


@pytest.fixture
def registered():
    register_method(NAME)(WeightedSimCLR)
    WeightedSimCLR.seen.clear()
    yield WeightedSimCLR
    METHODS._entries.pop(NAME, None)
    METHODS._descriptions.pop(NAME, None)


def _config(data: Path, out: Path, **method_args: Any) -> TrainConfig:
    return TrainConfig(method=NAME, data=str(data), arch="r3d_small", out=str(out), epochs=1, batch_size=4,
                       workers=0, frames=4, frame_step=2, crop=32, method_args=method_args, log_every=1)


def test_a_new_method_with_a_new_batch_input_trains_two_steps(registered, synth_data, tmp_path):  # noqa: F811
    from training.data.layouts import load_layout

    result = train(_config(synth_data, tmp_path / "run", weight_scale=0.5), progress=False)
    assert result.global_step == 2 and result.method.hparams.weight_scale == 0.5
    items, _ = load_layout(Path(synth_data))
    allowed = {float(len(Path(it.path).name)) for it in items}
    assert len(registered.seen) == 2
    for lengths in registered.seen:  # each step got its batch's rows of the prepared table
        assert lengths.shape == (4,) and set(lengths.tolist()) <= allowed


def test_prepare_errors_reach_the_caller(registered, synth_data, tmp_path):  # noqa: F811
    with pytest.raises(TrainError, match="weight_scale"):
        train(_config(synth_data, tmp_path / "run", weight_scale=-1.0), progress=False)
