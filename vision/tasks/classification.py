"""Image classification: cross-entropy training, confusion-matrix metrics (DDP-safe via torchmetrics)."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from vision.metrics import classification as cls_metrics
from vision.tasks.base import VisionTask


class ClassificationTask(VisionTask):
    task_name = "classification"

    def __init__(self, model: nn.Module, optimizer: Callable[..., Any], scheduler: Callable[..., Any] | None = None,
                 label_smoothing: float = 0.0, monitor: str = "val/acc", monitor_mode: str = "max",
                 labels: list[str] | None = None, seed: int = 0, sources: dict[str, str] | None = None) -> None:
        """``sources``: data source name -> kind (real / synthetic / refined), in the data's order."""
        super().__init__(model, optimizer, scheduler, monitor, monitor_mode, labels, seed)
        if not self.labels:
            raise ValueError("ClassificationTask needs the label list (filled in from the data)")
        self.label_smoothing = label_smoothing
        n = len(self.labels)
        self.val_cm = MulticlassConfusionMatrix(n)
        self.test_cm = MulticlassConfusionMatrix(n)
        self.sources = dict(sources or {})
        # one confusion matrix per source, so held-out metrics are reported per source and kind
        self.test_cm_by_source = nn.ModuleList(MulticlassConfusionMatrix(n) for _ in self.sources)
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

    def test_step(self, batch, batch_idx):
        pred = self._eval_step(batch, self.test_cm, "test")
        if len(batch) > 2 and len(self.test_cm_by_source):
            for i, cm in enumerate(self.test_cm_by_source):
                mask = batch[2] == i
                if mask.any():
                    cm.update(pred[mask], batch[1][mask])

    def on_test_epoch_end(self) -> None:
        self.test_report = self._eval_end(self.test_cm, "test")
        for label, m in self.test_report["per_class"].items():
            for k in ("precision", "recall", "f1"):
                self.log(f"test/{k}/{label}", m[k])
        by_kind: dict[str, Any] = {}
        per_source = {}
        for (name, kind), cm in zip(self.sources.items(), self.test_cm_by_source):
            mat = cm.compute().cpu().numpy()
            cm.reset()
            if mat.sum() == 0:
                continue
            per_source[name] = {"kind": kind, "top1": cls_metrics.top1(mat), "num_images": int(mat.sum())}
            self.log(f"test/acc/source/{name}", per_source[name]["top1"])
            by_kind[kind] = by_kind.get(kind, 0) + mat
        if per_source:
            self.test_report["per_source"] = per_source
            self.test_report["per_kind"] = {k: {"top1": cls_metrics.top1(m), "num_images": int(m.sum())}
                                            for k, m in by_kind.items()}
            if len(by_kind) > 1:
                for k, v in self.test_report["per_kind"].items():
                    self.log(f"test/acc/kind/{k}", v["top1"])

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)
