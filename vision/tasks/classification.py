"""Image classification: cross-entropy training, confusion-matrix metrics over every held-out image
(gathered from all processes under DDP, each image counted once)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
        self.slice_by = list(slice_by if slice_by is not None else ["source", "kind"])
        self._buf: dict[str, list[torch.Tensor]] = {"pred": [], "target": [], "index": []}
        self._last: dict[str, np.ndarray] = {}
        self.test_report: dict[str, Any] | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _eval_step(self, batch, prefix: str) -> None:
        x, y, index = batch[0], batch[1], batch[2]
        logits = self(x)
        self.log(f"{prefix}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True,
                 batch_size=len(y), sync_dist=True)
        for k, v in (("pred", logits.argmax(1)), ("target", y), ("index", index)):
            self._buf[k].append(v.detach())

    def _eval_end(self, prefix: str) -> dict[str, Any]:
        data = self.gather_by_index(self._buf)
        self._buf = {k: [] for k in self._buf}
        n = len(self.labels)
        cm = np.bincount(data["target"].astype(np.int64) * n + data["pred"].astype(np.int64),
                         minlength=n * n).reshape(n, n)
        rep = cls_metrics.report(cm, self.labels)
        self.log(f"{prefix}/acc", rep["top1"], prog_bar=True)
        self.log(f"{prefix}/macro_f1", rep["macro_f1"])
        self._last = data
        return rep

    def on_validation_epoch_start(self) -> None:
        self._buf = {k: [] for k in self._buf}

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._buf = {k: [] for k in self._buf}

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.test_report = self._eval_end("test")
        for label, m in self.test_report["per_class"].items():
            for k in ("precision", "recall", "f1"):
                self.log(f"test/{k}/{label}", m[k])
        dm = getattr(self.trainer, "datamodule", None)
        if self.slice_by and len(self._last.get("index", ())) and dm is not None:
            pred, index = self._last["pred"], self._last["index"]
            samples = [dm.splits["test"][i] for i in index]
            y_true = np.asarray([self.labels.index(s.label) for s in samples])
            kinds = {name: dm.source_kind(name) for name in dm.sources}
            slices = slice_report(samples, y_true, pred, self.slice_by, kinds)
            self.test_report["slices"] = slices
            for field, values in slices.items():
                if len(values) > 1:
                    for value, m in values.items():
                        self.log(f"test/acc/{field}/{value}", m["top1"], rank_zero_only=True)
