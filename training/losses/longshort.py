"""Long/short view feature decomposition: stationary and non-stationary contrastive terms.

Behrmann, Fayyaz, Gall, Noroozi, "Long Short View Feature Decomposition via Contrastive Video
Representation Learning", ICCV 2021. No official code was found (searched GitHub and the
web); this follows the paper's description (abstract, Fig. 2): a video gives one *long* view
and ``K`` *short* views, consecutive sub-sequences of it. The representation is split into
stationary features, shared by the long view and every short view (positive pairs), and
non-stationary features, where an aggregate of the short views' features must match the long
view's. Other videos of the batch are the negatives of both terms.

[unverified] The paper's exact loss form (which pairs count as negatives, whether short views
are also paired with each other, term weights) could not be read; both terms here are SimCLR's
NT-Xent (:func:`training.losses.info_nce.info_nce_loss`, negatives from both views of every
other video), the stationary one averaged over the ``K`` long-short pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.checks import check_shape, check_temperature, check_weight
from training.losses.info_nce import info_nce_loss


def stationary_loss(long: Tensor, short: Tensor, temperature: float = 0.1) -> Tensor:
    """Stationary term: the long view and each short view of a video are positives.

    ``mean_k info_nce(long, short[:, k])``: for each short view ``k`` an NT-Xent problem over
    the ``2B`` embeddings ``[long; short_k]`` (positive: the same video's other view; negatives:
    the other ``2B - 2``), averaged over the ``K`` short views.

    Args:
        long: ``B x P`` stationary embeddings of the long views (L2-normalised here).
        short: ``B x K x P`` stationary embeddings of the ``K`` short views of each video.
        temperature: ``tau > 0``.
    """
    check_temperature(temperature)
    check_shape("long", long, 2, "B x P")
    check_shape("short", short, 3, "B x K x P")
    if short.shape[0] != long.shape[0] or short.shape[2] != long.shape[1]:
        raise ValueError(f"short must be {long.shape[0]} x K x {long.shape[1]}, got {tuple(short.shape)}")
    return torch.stack([info_nce_loss(long, short[:, k], temperature) for k in range(short.shape[1])]).mean()


def non_stationary_loss(long: Tensor, aggregated: Tensor, temperature: float = 0.1) -> Tensor:
    """Non-stationary term: the aggregate of a video's short views must match its long view.

    ``info_nce(long, aggregated)`` (NT-Xent over ``2B`` embeddings).

    Args:
        long: ``B x P`` non-stationary embeddings of the long views (L2-normalised here).
        aggregated: ``B x P`` embeddings of the aggregated short views' non-stationary features.
        temperature: ``tau > 0``.
    """
    check_temperature(temperature)
    check_shape("long", long, 2, "B x P")
    if aggregated.shape != long.shape:
        raise ValueError(f"aggregated must have shape {tuple(long.shape)}, got {tuple(aggregated.shape)}")
    return info_nce_loss(long, aggregated, temperature)


def longshort_loss_terms(
    long_stationary: Tensor,
    short_stationary: Tensor,
    long_non_stationary: Tensor,
    aggregated_non_stationary: Tensor,
    temperature: float = 0.1,
) -> dict[str, Tensor]:
    """``{"stationary": ..., "non_stationary": ...}``, see the two functions above for shapes."""
    return {
        "stationary": stationary_loss(long_stationary, short_stationary, temperature),
        "non_stationary": non_stationary_loss(long_non_stationary, aggregated_non_stationary, temperature),
    }


class LongShortLoss(nn.Module):
    """Long/short view decomposition: weighted stationary + non-stationary NT-Xent terms -> scalar."""

    def __init__(
        self, *, temperature: float = 0.1, stationary_weight: float = 1.0, non_stationary_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.weights = {
            "stationary": check_weight("stationary_weight", stationary_weight),
            "non_stationary": check_weight("non_stationary_weight", non_stationary_weight),
        }

    def forward(
        self,
        long_stationary: Tensor,
        short_stationary: Tensor,
        long_non_stationary: Tensor,
        aggregated_non_stationary: Tensor,
    ) -> Tensor:
        """``w_s * stationary + w_n * non_stationary`` (see :func:`longshort_loss_terms`)."""
        terms = longshort_loss_terms(
            long_stationary, short_stationary, long_non_stationary, aggregated_non_stationary, self.temperature
        )
        return torch.stack([self.weights[k] * v for k, v in terms.items()]).sum()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weights={self.weights}"
