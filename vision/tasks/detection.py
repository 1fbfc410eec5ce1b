"""Object detection: the anchor-free detector's loss in training; COCO mAP (pycocotools) on the
held-out images in their original pixels, sliced by object height, source, kind and condition."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from torch import nn

from vision.metrics import detection as det_metrics
from vision.models.detector import DetectionLoss
from vision.tasks.base import VisionTask


def to_original(boxes: np.ndarray, scale: tuple[float, float], pad: tuple[float, float], width: int,
                height: int) -> np.ndarray:
    """Undo the letterbox: network-input xyxy -> original image xyxy, clipped to the image."""
    b = (np.asarray(boxes, np.float64).reshape(-1, 4) - np.asarray([pad[0], pad[1]] * 2)) / np.asarray([scale[0], scale[1]] * 2)
    b[:, 0::2] = b[:, 0::2].clip(0, width)
    b[:, 1::2] = b[:, 1::2].clip(0, height)
    return b.astype(np.float32)


class DetectionTask(VisionTask):
    task_name = "detection"

    def __init__(self, model: nn.Module, optimizer: Callable[..., Any], scheduler: Callable[..., Any] | None = None,
                 loss: Mapping[str, Any] | None = None, monitor: str = "val/ap50", monitor_mode: str = "max",
                 labels: list[str] | None = None, seed: int = 0, score_threshold: float = 0.05,
                 nms_iou: float = 0.6, max_detections: int = 100, slice_by: list[str] | None = None,
                 gallery_size: int = 16) -> None:
        """``loss``: :class:`~vision.models.detector.DetectionLoss` options (``center_radius``,
        ``weights``...). ``score_threshold``/``nms_iou``/``max_detections``: decoding for evaluation
        (a low threshold, as COCO AP integrates over all scores). ``slice_by``: fields the held-out AP
        is also reported by (``source``, ``kind``, any ``meta`` path such as ``condition``)."""
        super().__init__(model, optimizer, scheduler, monitor, monitor_mode, labels, seed)
        if not self.labels:
            raise ValueError("DetectionTask needs the class list (filled in from data.classes)")
        # torchvision baselines (vision.models.tv_detectors) bring their own loss and decoding
        self.native = bool(getattr(model, "native_loss", False))
        self.criterion = None if self.native else DetectionLoss.for_model(model, **dict(loss or {}))
        self.decode = {"score_threshold": float(score_threshold), "nms_iou": float(nms_iou),
                       "max_detections": int(max_detections)}
        self.slice_by = list(slice_by if slice_by is not None else ["source", "kind", "condition"])
        self.gallery_size = int(gallery_size)
        self._preds: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.test_report: dict[str, Any] | None = None
        self.val_report: dict[str, Any] | None = None

    def training_step(self, batch, batch_idx):
        x, targets, _ = batch
        losses = self.model.loss(x, targets) if self.native else self.criterion(self(x), targets)
        n = len(x)
        self.log("train/loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        for k, v in losses.items():
            if k != "loss":
                self.log(f"train/{k}", v.float(), on_step=False, on_epoch=True, batch_size=n)
        return losses["loss"]

    # -- evaluation ------------------------------------------------------------------------------
    def _eval_step(self, batch, prefix: str, split: str) -> None:
        x, targets, index = batch
        if self.native:
            decoded = self.model.detect(x, self.decode["score_threshold"], self.decode["max_detections"])
        else:
            outputs = self(x)
            losses = self.criterion(outputs, targets)
            self.log(f"{prefix}/loss", losses["loss"], on_epoch=True, prog_bar=False, batch_size=len(x),
                     sync_dist=True)
            cls, box, q = (o.float().cpu().numpy() for o in outputs)
            decoded = _decode(self.model, cls, box, q, self.decode)
        samples = self.trainer.datamodule.splits[split]
        for (boxes, scores, labels), t, i in zip(decoded, targets, index.tolist()):
            s = samples[i]
            self._preds[i] = (to_original(boxes, t["scale"], t["pad"], s.width, s.height), scores, labels)

    def _eval_end(self, prefix: str, split: str, artifacts: bool = False) -> dict[str, Any]:
        dm = self.trainer.datamodule
        # the images this epoch evaluated (all of them, unless limit_val/test_batches cuts the loader),
        # from every process under DDP
        gathered = self.gather_dict(self._preds)
        self._preds = {}
        seen = sorted(gathered)
        samples = [dm.splits[split][i] for i in seen]
        preds = [gathered[i] for i in seen]
        kinds = {name: dm.source_kind(name) for name in dm.sources}
        rep = det_metrics.evaluate_detections(samples, preds, self.labels, slice_by=self.slice_by, kinds=kinds,
                                              max_detections=self.decode["max_detections"])
        if self.trainer.sanity_checking:
            return rep
        self.log(f"{prefix}/ap50", max(rep["ap50"], 0.0), prog_bar=True)
        self.log(f"{prefix}/ap", max(rep["ap"], 0.0))
        for bucket, m in rep["size"].items():
            if m.get("ap50") is not None and m["ap50"] >= 0:
                self.log(f"{prefix}/ap50/size/{_metric_name(bucket)}", m["ap50"])
        if artifacts:
            if self.trainer.is_global_zero:  # one writer of the plots under DDP
                out = Path(self.trainer.default_root_dir) / "eval"
                out.mkdir(parents=True, exist_ok=True)
                files = {"pr_curve": det_metrics.pr_curve_figure(rep, out / "pr_curve.png")}
                gallery = det_metrics.error_gallery(samples, preds, self.labels, out / "errors.png",
                                                    k=self.gallery_size, read=dm.dataset(split).read)
                if gallery is not None:
                    files["error_gallery"] = gallery
                rep["artifacts"] = {k: str(v) for k, v in files.items()}
            for field, values in rep.get("slices", {}).items():
                if len(values) > 1:
                    for value, m in values.items():
                        if m.get("ap50") is not None and m["ap50"] >= 0:
                            self.log(f"{prefix}/ap50/{field}/{_metric_name(value)}", m["ap50"], rank_zero_only=True)
        return rep

    def on_validation_epoch_start(self) -> None:
        self._preds = {}

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", "val")

    def on_validation_epoch_end(self) -> None:
        self.val_report = self._eval_end("val", "val")

    def on_test_epoch_start(self) -> None:
        self._preds = {}

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", "test")

    def on_test_epoch_end(self) -> None:
        self.test_report = self._eval_end("test", "test", artifacts=True)


def _metric_name(value: Any) -> str:
    """MLflow metric names allow only letters, digits and ``_ - . / space``: ``<50px`` -> ``lt50px``."""
    import re

    text = str(value).replace("<", "lt").replace(">", "gt")
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def _decode(model: nn.Module, cls: np.ndarray, box: np.ndarray, q: np.ndarray, kw: dict) -> list:
    from vision.runtime.detect_decode import decode_numpy

    return decode_numpy(cls, box, q, model.points.cpu().numpy(), image_size=tuple(model.config.input_size), **kw)
