"""The domain gap as a number: how well a small CNN tells real from synthetic frames it has never seen.

:func:`domain_accuracy` trains a 4-layer CNN on random crops of training frames (synthetic = 0, real = 1)
for a fixed number of steps, then scores held-out frames: each frame is the mean probability over a fixed
grid of crops. It reports the **balanced** accuracy (the mean of the per-domain accuracies, so unequal
frame counts do not matter): 1.0 = the domains are told apart perfectly, 0.5 = indistinguishable.
Crops (not whole frames) keep the classifier on appearance (texture, noise, colour, blur) rather than on
scene layout, which refinement must not change. Run it once on raw synthetic frames and once, with the
same settings, on their refined copies: refinement closes the gap when the second number is nearer 0.5.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthetic.refine.data import random_crop, to_tensor
from vision.errors import DataError


class DomainClassifier(nn.Module):
    """Four stride-2 convolutions with GroupNorm (no batch statistics: a batch-normalized classifier learns
    from the real/synthetic mix inside its training batches and fails on single-domain batches), mean pool."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for k in range(4):
            c2 = width * 2 ** k
            layers += [nn.Conv2d(c, c2, 3, stride=2, padding=1), nn.GroupNorm(4, c2), nn.ReLU(inplace=True)]
            c = c2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3))).squeeze(1)


def grid_crops(img: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """``count`` (about) crops on an even grid over the frame, deterministic."""
    h, w = img.shape[:2]
    rows = max(1, int(round(np.sqrt(count * h / w))))
    cols = max(1, int(np.ceil(count / rows)))
    ys = np.linspace(0, h - size, rows).round().astype(int)
    xs = np.linspace(0, w - size, cols).round().astype(int)
    return [img[y:y + size, x:x + size] for y in ys for x in xs]


def _check(frames: Sequence[np.ndarray], what: str, size: int) -> None:
    if not len(frames):
        raise DataError(f"domain classifier: no {what} frames")
    small = [f.shape[:2] for f in frames if min(f.shape[:2]) < size]
    if small:
        raise DataError(f"domain classifier: {len(small)} {what} frame(s) smaller than the crop size {size} "
                        f"(e.g. {small[0][1]}x{small[0][0]})")


def train_domain_classifier(train_synthetic: Sequence[np.ndarray], train_real: Sequence[np.ndarray],
                            crop_size: int = 64, steps: int = 300, batch_size: int = 32, lr: float = 1e-3,
                            seed: int = 0, width: int = 16) -> tuple[DomainClassifier, dict[str, Any]]:
    """Train on random crops (synthetic = 0, real = 1, half of each per batch); returns the model and its record."""
    _check(train_synthetic, "training synthetic", crop_size)
    _check(train_real, "training real", crop_size)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DomainClassifier(width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    half = max(1, batch_size // 2)
    labels = torch.cat([torch.zeros(half), torch.ones(half)])
    model.train()
    losses = []
    for _ in range(int(steps)):
        xs = [to_tensor(random_crop(rng, train_synthetic[int(rng.integers(len(train_synthetic)))], crop_size, True))
              for _ in range(half)]
        xs += [to_tensor(random_crop(rng, train_real[int(rng.integers(len(train_real)))], crop_size, True))
               for _ in range(half)]
        loss = F.binary_cross_entropy_with_logits(model(torch.stack(xs)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, {"train_frames": {"synthetic": len(train_synthetic), "real": len(train_real)},
                   "final_train_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
                   "steps": int(steps), "crop_size": int(crop_size), "batch_size": 2 * half}


@torch.no_grad()
def evaluate_domain(model: DomainClassifier, test_synthetic: Sequence[np.ndarray], test_real: Sequence[np.ndarray],
                    crop_size: int = 64, crops_per_frame: int = 12) -> dict[str, Any]:
    """Balanced held-out accuracy per frame (mean probability over a grid of crops) and per crop."""
    _check(test_synthetic, "held-out synthetic", crop_size)
    _check(test_real, "held-out real", crop_size)
    model.eval()

    def probs(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [torch.sigmoid(model(torch.stack([to_tensor(c) for c in grid_crops(f, crop_size, crops_per_frame)])))
                .numpy() for f in frames]

    ps, pr = probs(test_synthetic), probs(test_real)
    frame_syn = float(np.mean([p.mean() < 0.5 for p in ps]))
    frame_real = float(np.mean([p.mean() >= 0.5 for p in pr]))
    crop_syn = float(np.mean(np.concatenate(ps) < 0.5))
    crop_real = float(np.mean(np.concatenate(pr) >= 0.5))
    return {"accuracy": round(0.5 * (frame_syn + frame_real), 4),
            "crop_accuracy": round(0.5 * (crop_syn + crop_real), 4),
            "accuracy_synthetic": round(frame_syn, 4), "accuracy_real": round(frame_real, 4),
            "held_out_frames": {"synthetic": len(ps), "real": len(pr)}}


def domain_accuracy(train_synthetic: Sequence[np.ndarray], train_real: Sequence[np.ndarray],
                    test_synthetic: Sequence[np.ndarray], test_real: Sequence[np.ndarray], crop_size: int = 64,
                    steps: int = 300, batch_size: int = 32, lr: float = 1e-3, crops_per_frame: int = 12,
                    seed: int = 0, width: int = 16) -> dict[str, Any]:
    """Train on the training frames, return the balanced held-out accuracy (per frame and per crop)."""
    _check(test_synthetic, "held-out synthetic", crop_size)
    _check(test_real, "held-out real", crop_size)
    model, record = train_domain_classifier(train_synthetic, train_real, crop_size, steps, batch_size, lr, seed, width)
    return {**evaluate_domain(model, test_synthetic, test_real, crop_size, crops_per_frame), **record}
