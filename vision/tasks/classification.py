"""Image classification: cross-entropy training, confusion-matrix metrics (DDP-safe via torchmetrics)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from vision.metrics import classification as cls_metrics
from vision.metrics.slices import slice_report
from vision.tasks.base import VisionTask


class ClassificationTask(VisionTask):
    task_name = "classification"

    def __init__(self, model: nn.Module, optimizer: Callable[..., Any], scheduler: Callable[..., Any] | None = None,
                 label_smoothing: float = 0.0, monitor: str = "val/acc", monitor_mode: str = "max",
                 labels: list[str] | None = None, seed: int = 0, slice_by: list[str] | None = None) -> None:
        """``slice_by``: fields the held-out metrics are also reported by (see vision.metrics.slices)."""
        super().__init__(model, optimizer, scheduler, monitor, monitor_mode, labels, seed)
        if not self.labels:
            raise ValueError("ClassificationTask needs the label list (filled in from the data)")
        self.label_smoothing = label_smoothing
        n = len(self.labels)
        self.val_cm = MulticlassConfusionMatrix(n)
        self.test_cm = MulticlassConfusionMatrix(n)
        self.slice_by = list(slice_by if slice_by is not None else ["source", "kind"])
        self._test_pred: list[torch.Tensor] = []
        self._test_index: list[torch.Tensor] = []
        self.test_report: dict[str, Any] | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _eval_step(self, batch, cm: MulticlassConfusionMatrix, prefix: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log(f"{prefix}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True,
                 batch_size=len(y), sync_dist=True)
        pred = logits.argmax(1)
        cm.update(pred, y)
        return pred

    def _eval_end(self, cm: MulticlassConfusionMatrix, prefix: str) -> dict[str, Any]:
        rep = cls_metrics.report(cm.compute().cpu().numpy(), self.labels)
        cm.reset()
        self.log(f"{prefix}/acc", rep["top1"], prog_bar=True)
        self.log(f"{prefix}/macro_f1", rep["macro_f1"])
        return rep

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_cm, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end(self.val_cm, "val")

    def on_test_epoch_start(self) -> None:
        self._test_pred, self._test_index = [], []

    def test_step(self, batch, batch_idx):
        pred = self._eval_step(batch, self.test_cm, "test")
        if len(batch) > 2:  # sample indices of the test split, for sliced metrics
            self._test_pred.append(pred)
            self._test_index.append(batch[2])

    def on_test_epoch_end(self) -> None:
        self.test_report = self._eval_end(self.test_cm, "test")
        for label, m in self.test_report["per_class"].items():
            for k in ("precision", "recall", "f1"):
                self.log(f"test/{k}/{label}", m[k])
        dm = getattr(self.trainer, "datamodule", None)
        if self.slice_by and self._test_index and dm is not None:
            pred = self.all_gather(torch.cat(self._test_pred)).reshape(-1).cpu().numpy()
            index = self.all_gather(torch.cat(self._test_index)).reshape(-1).cpu().numpy()
            samples = [dm.splits["test"][i] for i in index]
            y_true = np.asarray([self.labels.index(s.label) for s in samples])
            kinds = {name: dm.source_kind(name) for name in dm.sources}
            slices = slice_report(samples, y_true, pred, self.slice_by, kinds)
            self.test_report["slices"] = slices
            for field, values in slices.items():
                if len(values) > 1:
                    for value, m in values.items():
                        self.log(f"test/acc/{field}/{value}", m["top1"], rank_zero_only=True)
