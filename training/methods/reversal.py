"""Time-reversed clips as hard negatives: the one augmentation that keeps the appearance and
breaks the motion.

Two views of one video share everything: the object's look, the background, the motion.
Instance discrimination is solved by whatever is cheapest to see, and on short budgets that is
appearance (colour, texture), not motion; a linear probe for the motion class then scores at
the untrained floor (measured: ``docs/ladder.md``). A clip played backwards has exactly the
appearance of the forward clip and the opposite motion (MoveLeft becomes MoveRight, a
clockwise turn anticlockwise), so as a negative it can only be told apart by motion: the
encoder must represent the direction of time. This is the "same scene, broken motion"
negative of DSM (Wang et al. 2021, "Enhancing unsupervised video representation learning by
decoupling the scene and the motion") and TaCo's temporal augmentations (Bai et al. 2020),
added as extra negatives to the methods' own losses (``--set reverse_negatives=true``); off
by default, so every method stays its paper's computation unless asked.
"""

from __future__ import annotations

import torch


def reverse_time(x: torch.Tensor) -> torch.Tensor:
    """``B x C x T x H x W`` clips played backwards (a copy)."""
    if x.ndim != 5:
        raise ValueError(f"expected B x C x T x H x W clips, got shape {tuple(x.shape)}")
    return x.flip(2)
