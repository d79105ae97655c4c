"""The error a training run raises when it cannot start; shared by the loop and the methods."""

from __future__ import annotations


class TrainError(ValueError):
    """A training run cannot start (bad data folder, batch larger than the data set, ...)."""
