"""SimCLR's NT-Xent (InfoNCE) loss over two views of a batch.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020, eq. 1 and Algorithm 1. The TCLR official code (``nt_xent_original.py::NTXentLoss``)
computes the same quantity (CE summed over the ``2B`` rows and divided by ``2B``).
"""

from __future__ import annotations

from torch import Tensor, nn

from training.checks import check_shape, check_temperature
from training.losses.nt_xent import nt_xent_rows


def info_nce_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent over the ``2B`` embeddings of two views.

    The embeddings are L2-normalised here. Row ``i`` of ``[z1; z2]`` has one positive, the other
    view of the same sample, and ``2B - 2`` negatives, every other embedding; itself is excluded.
    The loss is the mean over all ``2B`` rows, i.e. both directions (``z1 -> z2`` and back).

    Args:
        z1: ``B x D`` embeddings of view 1.
        z2: ``B x D`` embeddings of view 2 (row ``i`` pairs with ``z1[i]``).
        temperature: softmax temperature ``tau > 0`` (SimCLR tunes it in 0.1-1; TCLR uses 0.1).

    Returns:
        Scalar loss.
    """
    check_temperature(temperature)
    check_shape("z1", z1, 2, "B x D")
    if z1.shape[0] < 1:
        raise ValueError("info_nce_loss needs at least one sample per view")
    return nt_xent_rows(z1, z2, temperature).mean()


class InfoNCELoss(nn.Module):
    """SimCLR NT-Xent (InfoNCE) loss over two views, ``B x D`` each -> scalar."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """See :func:`info_nce_loss`."""
        return info_nce_loss(z1, z2, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
