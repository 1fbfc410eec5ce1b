"""Learning-rate schedules that need the run's total step count (filled in by the task)."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05,
                  min_lr_ratio: float = 0.01) -> dict:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` of the base rate, stepped per batch."""
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"scheduler.warmup_fraction must be in [0, 1), got {warmup_fraction}")
    warm = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def constant(optimizer: Optimizer, total_steps: int) -> dict:
    return {"scheduler": LambdaLR(optimizer, lambda _: 1.0), "interval": "step"}
