"""torchvision's SSDlite and Faster R-CNN as reference baselines behind the detection recipe's interface.

They train and evaluate through :class:`vision.tasks.detection.DetectionTask` exactly like the edge
detector (same data, letterboxed inputs, same COCO evaluation), so their AP is comparable; they are
references, not deployment models (the export pipeline refuses them: SSDlite and Faster R-CNN carry
data-dependent post-processing that edge compilers do not take as fixed-shape int8 graphs).

Nothing is downloaded: ``weights`` and ``weights_backbone`` are always None (from scratch); your own
weights load through ``pretrained`` (a local path or URL you name).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vision.models import pretrained as pretrained_mod

BASELINES = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn",
             "fasterrcnn_mobilenet_v3_large_fpn")


class _Config:
    def __init__(self, input_size: tuple[int, int], num_classes: int, arch: str) -> None:
        self.input_size = tuple(int(v) for v in input_size)
        self.num_classes = num_classes
        self.arch = arch


class TorchvisionDetector(nn.Module):
    """``loss(x, targets)`` in training, ``detect(x, ...)`` in evaluation; class 0 is torchvision's
    background, so labels are shifted by one inside and outside stays 0-based like the edge detector.
    Inputs are already normalized and at the input size: the torchvision transform is an identity."""

    native_loss = True

    def __init__(self, arch: str, num_classes: int, input_size: tuple[int, int] = (320, 320),
                 score_threshold: float = 0.01, max_detections: int = 100) -> None:
        super().__init__()
        from torchvision.models import detection as tvd

        if arch not in BASELINES:
            raise ValueError(f"model.arch must be one of {BASELINES}, got {arch!r}")
        h, w = (int(v) for v in input_size)
        common = {"weights": None, "weights_backbone": None, "num_classes": num_classes + 1,
                  "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0]}
        if arch.startswith("ssdlite"):
            self.net = getattr(tvd, arch)(**common, score_thresh=score_threshold, detections_per_img=max_detections)
            self.net.transform.min_size = (min(h, w),)
            self.net.transform.max_size = max(h, w)
        else:
            self.net = getattr(tvd, arch)(**common, min_size=min(h, w), max_size=max(h, w),
                                          box_score_thresh=score_threshold, box_detections_per_img=max_detections)
        self.config = _Config((h, w), num_classes, arch)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor):
        raise RuntimeError(f"{self.config.arch} is a reference baseline: use loss() to train and detect() to "
                           f"predict (it is not exported to edge bundles; train model=detector for that)")

    def loss(self, x: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        tv_targets = [{"boxes": t["boxes"].to(x.device).reshape(-1, 4),
                       "labels": t["labels"].to(x.device).long() + 1} for t in targets]
        losses = self.net(list(x), tv_targets)
        total = sum(losses.values())
        return {"loss": total, **{k: v.detach() for k, v in losses.items()}}

    @torch.no_grad()
    def detect(self, x: torch.Tensor, score_threshold: float = 0.05,
               max_detections: int = 100) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        was_training = self.net.training
        self.net.eval()
        try:
            outs = self.net(list(x))
        finally:
            self.net.train(was_training)
        res = []
        for o in outs:
            keep = o["scores"] >= score_threshold
            boxes = o["boxes"][keep][:max_detections].float().cpu().numpy()
            scores = o["scores"][keep][:max_detections].float().cpu().numpy()
            labels = (o["labels"][keep][:max_detections] - 1).cpu().numpy().astype(np.int64)
            res.append((boxes.reshape(-1, 4), scores, labels))
        return res


def build_torchvision_detector(arch: str = "ssdlite320_mobilenet_v3_large", num_classes: int = 2,
                               input_size: tuple[int, int] = (320, 320), score_threshold: float = 0.01,
                               max_detections: int = 100, pretrained: str | None = None,
                               pretrained_sha256: str | None = None) -> TorchvisionDetector:
    model = TorchvisionDetector(arch, num_classes, tuple(input_size), score_threshold, max_detections)
    if pretrained:
        pretrained_mod.load_into(model, pretrained, pretrained_sha256, prefix="model.")
    return model
