"""Re-identification losses: identity cross-entropy with label smoothing, batch-hard triplet, centre loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def identity_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy over the training identities with label smoothing (Szegedy et al. 2016)."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def pairwise_distance(x: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """``[N, N]`` Euclidean distances (numerically safe gradient at 0)."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.t()).clamp_min(0.0)
    return d2 if squared else (d2 + 1e-12).sqrt()


def batch_hard_triplet(embeddings: torch.Tensor, targets: torch.Tensor, margin: float = 0.3,
                       soft_margin: bool = False, normalize: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch-hard triplet loss (Hermans, Beyer, Leibe 2017): for each anchor its farthest positive and
    nearest negative in the batch; ``max(0, d_ap - d_an + margin)``, or ``log(1 + exp(d_ap - d_an))`` with
    ``soft_margin``. Anchors without a positive (K = 1) or a negative (one identity) do not count.
    Returns the loss and statistics (share of active triplets, mean d_ap and d_an)."""
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    d = pairwise_distance(x)
    same = targets[:, None] == targets[None, :]
    eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        zero = embeddings.sum() * 0.0
        return zero, {"active": 0.0, "d_ap": 0.0, "d_an": 0.0}
    d_ap = (d * pos_mask).max(1).values  # distances are >= 0, so masked-out zeros never win
    d_an = d.masked_fill(~neg_mask, float("inf")).min(1).values
    d_ap, d_an = d_ap[valid], d_an[valid]
    diff = d_ap - d_an
    loss = F.softplus(diff) if soft_margin else F.relu(diff + margin)
    with torch.no_grad():
        stats = {"active": float((diff + (0.0 if soft_margin else margin) > 0).float().mean()),
                 "d_ap": float(d_ap.mean()), "d_an": float(d_an.mean())}
    return loss.mean(), stats


class CenterLoss(nn.Module):
    """Centre loss (Wen et al. 2016): mean squared distance of each embedding to its identity's learned
    centre, ``0.5 * ||f - c_y||^2`` (the centres are parameters, trained by the task's optimizer)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim) * 0.01)

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (embeddings - self.centers[targets]).pow(2).sum(1).mean()
