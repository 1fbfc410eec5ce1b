"""Lightning callbacks of the toolkit."""
from __future__ import annotations

import time

import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    """Training images per second for each epoch (logged as ``train/img_per_s``)."""

    def __init__(self) -> None:
        self.history: list[float] = []
        self._t0 = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1]) if isinstance(batch, (list, tuple)) else 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dt = time.perf_counter() - self._t0
        if self._images and dt > 0:
            rate = self._images / dt
            self.history.append(rate)
            pl_module.log("train/img_per_s", rate, on_epoch=True, on_step=False)

    @property
    def median(self) -> float | None:
        if not self.history:
            return None
        h = sorted(self.history[1:] or self.history)  # the first epoch includes warm-up
        return h[len(h) // 2]
