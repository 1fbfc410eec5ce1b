"""A compact single-stage, anchor-free (FCOS-like) person/vehicle detector for edge accelerators.

* Fixed input size; a convolution-only graph (Conv + BN + ReLU, nearest Resize, Add, Mul) that
  exports to ONNX at a fixed shape and quantizes to int8 QDQ.
* Backbone: ``resnet18``/``resnet34`` (torchvision BasicBlocks with a width multiplier, as
  :class:`vision.models.classifiers.ScaledResNet`) or ``mobilenet_v2`` (torchvision features),
  tapped at strides 8, 16, 32. Neck: a light FPN. Head: shared 3x3 convs (BN per level).
* ``forward(x) -> (cls_logits [N, A, C], box_ltrb [N, A, 4] input pixels, quality [N, A])`` with
  ``A`` the locations of all levels, concatenated level by level, row-major; their centres are the
  fixed buffer ``model.points [A, 2]`` (x, y) and ``model.point_strides [A]``.
* :class:`DetectionLoss`: centre-sampled assignment with size ranges per level (20-30 px people go
  to stride 8), focal loss, GIoU weighted by centerness, BCE on the centerness (quality) logit.
* Decoding is numpy only: :func:`vision.runtime.detect_decode.decode_numpy` (re-exported here).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from vision.models import pretrained as pretrained_mod
from vision.models.classifiers import ScaledResNet, _round8
from vision.runtime.detect_decode import batched_nms, box_iou, decode_numpy, ltrb_to_xyxy, nms

__all__ = ["DETECTOR_ARCHS", "DetectorConfig", "Detector", "DetectionLoss", "build_detector",
           "make_points", "decode_numpy", "nms", "batched_nms", "box_iou", "ltrb_to_xyxy"]

DETECTOR_ARCHS = ("resnet18", "resnet34", "mobilenet_v2")
_BACKBONE_STRIDES = (8, 16, 32)


@dataclass
class DetectorConfig:
    arch: str = "resnet18"
    num_classes: int = 2
    width_mult: float = 0.5
    input_size: tuple[int, int] = (320, 320)  # (height, width)
    strides: tuple[int, ...] = (8, 16, 32)
    neck_channels: int | None = None  # default: round8(128 * width_mult), at least 32
    head_convs: int = 2
    prior_prob: float = 0.01

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        self.strides = tuple(sorted(int(s) for s in self.strides))
        if self.arch not in DETECTOR_ARCHS:
            raise ValueError(f"model.arch must be one of {DETECTOR_ARCHS}, got {self.arch!r}")
        if self.num_classes < 1:
            raise ValueError(f"a detector needs at least 1 class, got {self.num_classes}")
        if self.width_mult <= 0:
            raise ValueError(f"model.width_mult must be > 0, got {self.width_mult}")
        if not self.strides or any(s not in _BACKBONE_STRIDES for s in self.strides):
            raise ValueError(f"detector strides must be a non-empty subset of {_BACKBONE_STRIDES}, got {self.strides}")
        if len(self.input_size) != 2 or any(v <= 0 or v % max(_BACKBONE_STRIDES) for v in self.input_size):
            raise ValueError(f"input_size (height, width) must be positive multiples of 32, got {self.input_size}")
        if self.neck_channels is None:
            self.neck_channels = max(32, _round8(128 * self.width_mult))

    @property
    def feature_sizes(self) -> list[tuple[int, int]]:
        return [(self.input_size[0] // s, self.input_size[1] // s) for s in self.strides]

    @property
    def num_locations(self) -> int:
        return sum(h * w for h, w in self.feature_sizes)

    def size_ranges(self) -> list[tuple[float, float]]:
        """Per level, the range of max(l, t, r, b) regression distance it is responsible for:
        boundaries at 8 x stride (stride 8: <= 64 px, 16: 64-128, 32: > 128)."""
        bounds = [8.0 * s for s in self.strides[:-1]]
        lows = [0.0] + bounds
        highs = bounds + [math.inf]
        return list(zip(lows, highs))


def make_points(input_size: tuple[int, int], strides) -> tuple[torch.Tensor, torch.Tensor]:
    """Location centres ``[A, 2]`` (x, y) in input pixels, level by level, row-major, and their strides ``[A]``."""
    pts, strs = [], []
    for s in strides:
        h, w = input_size[0] // s, input_size[1] // s
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        pts.append(torch.stack([(xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s], dim=1))
        strs.append(torch.full((h * w,), float(s)))
    return torch.cat(pts), torch.cat(strs)


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ResNetBackbone(ScaledResNet):
    """ScaledResNet without its classifier; returns the stride 8/16/32 feature maps.
    Its parameter names match the classifier's, so a classifier checkpoint loads into it."""

    def __init__(self, layers: list[int], width_mult: float) -> None:
        super().__init__(layers, num_classes=1, width_mult=width_mult)
        del self.fc, self.avgpool, self.dropout
        self.out_channels = [self.layer2[-1].bn2.num_features, self.layer3[-1].bn2.num_features,
                             self.layer4[-1].bn2.num_features]

    def forward(self, x):
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


class MobileNetV2Backbone(nn.Module):
    """torchvision MobileNetV2 ``features`` (ReLU6, int8-friendly) tapped at strides 8, 16, 32."""

    TAPS = (6, 13, 17)  # last block at stride 8 (32 ch), 16 (96 ch), 32 (320 ch); drops the 1280-ch conv

    def __init__(self, width_mult: float) -> None:
        super().__init__()
        self.features = tvm.mobilenet_v2(weights=None, width_mult=width_mult).features[: self.TAPS[-1] + 1]
        self.out_channels = [self.features[i].out_channels for i in self.TAPS]

    def forward(self, x):
        outs = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.TAPS:
                outs.append(x)
        return outs


class FPN(nn.Module):
    """Top-down FPN: 1x1 lateral (Conv-BN-ReLU), nearest x2 upsample + add, 3x3 smoothing (Conv-BN-ReLU)."""

    def __init__(self, in_channels: list[int], out_channels: int, out_levels: list[int]) -> None:
        super().__init__()
        # levels from the finest used one up to the coarsest backbone level (coarser context flows down)
        self.first = min(out_levels)
        self.out_levels = list(out_levels)
        used = range(self.first, len(in_channels))
        self.lateral = nn.ModuleList(_cbr(in_channels[i], out_channels, 1) for i in used)
        self.smooth = nn.ModuleList(_cbr(out_channels, out_channels, 3) for _ in self.out_levels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [m(f) for m, f in zip(self.lateral, feats[self.first:])]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + F.interpolate(lat[i + 1], scale_factor=2.0, mode="nearest")
        return [sm(lat[lvl - self.first]) for sm, lvl in zip(self.smooth, self.out_levels)]


class Scale(nn.Module):
    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x):
        return x * self.scale


class Head(nn.Module):
    """Shared (across levels) classification and regression towers; BatchNorm is per level (the
    statistics of the levels differ), folded into the convolutions at export."""

    def __init__(self, channels: int, num_classes: int, num_levels: int, num_convs: int, prior_prob: float) -> None:
        super().__init__()
        self.cls_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, 1, 1, bias=False) for _ in range(num_convs))
        self.reg_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, 1, 1, bias=False) for _ in range(num_convs))
        self.cls_bns = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(num_convs))
                                     for _ in range(num_levels))
        self.reg_bns = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(num_convs))
                                     for _ in range(num_levels))
        self.cls_out = nn.Conv2d(channels, num_classes, 3, 1, 1)
        self.box_out = nn.Conv2d(channels, 4, 3, 1, 1)
        self.quality_out = nn.Conv2d(channels, 1, 3, 1, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for m in [*self.cls_convs, *self.reg_convs, self.cls_out, self.box_out, self.quality_out]:
            nn.init.normal_(m.weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.constant_(self.box_out.bias, 1.0)  # distances start at ~1 stride (ReLU not dead)
        nn.init.zeros_(self.quality_out.bias)

    def forward(self, x: torch.Tensor, level: int):
        c = r = x
        for conv, bn in zip(self.cls_convs, self.cls_bns[level]):
            c = F.relu(bn(conv(c)))
        for conv, bn in zip(self.reg_convs, self.reg_bns[level]):
            r = F.relu(bn(conv(r)))
        return self.cls_out(c), F.relu(self.scales[level](self.box_out(r))), self.quality_out(r)


class Detector(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        if config.arch == "resnet18":
            self.backbone: nn.Module = ResNetBackbone([2, 2, 2, 2], config.width_mult)
        elif config.arch == "resnet34":
            self.backbone = ResNetBackbone([3, 4, 6, 3], config.width_mult)
        else:
            self.backbone = MobileNetV2Backbone(config.width_mult)
        levels = [_BACKBONE_STRIDES.index(s) for s in config.strides]
        self.neck = FPN(self.backbone.out_channels, config.neck_channels, levels)
        self.head = Head(config.neck_channels, config.num_classes, len(levels), config.head_convs, config.prior_prob)
        points, point_strides = make_points(config.input_size, config.strides)
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("point_strides", point_strides, persistent=False)
        self._sizes = config.feature_sizes
        self.num_classes = config.num_classes

    @property
    def strides(self) -> tuple[int, ...]:
        return self.config.strides

    def forward(self, x: torch.Tensor):
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            if tuple(x.shape[-2:]) != self.config.input_size:
                raise ValueError(f"the detector is built for input {self.config.input_size} (H, W), got {tuple(x.shape[-2:])}")
        feats = self.neck(self.backbone(x))
        cls_all, box_all, q_all = [], [], []
        for lvl, (f, (h, w), s) in enumerate(zip(feats, self._sizes, self.config.strides)):
            c, b, q = self.head(f, lvl)
            hw = h * w  # python ints: the reshapes export with constant shapes
            cls_all.append(c.permute(0, 2, 3, 1).reshape(-1, hw, self.num_classes))
            box_all.append(b.permute(0, 2, 3, 1).reshape(-1, hw, 4) * float(s))
            q_all.append(q.reshape(-1, hw))
        return torch.cat(cls_all, 1), torch.cat(box_all, 1), torch.cat(q_all, 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, **decode_kwargs) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Eval-time convenience: forward + numpy decoding (boxes xyxy in input pixels)."""
        cls, box, q = self(x)
        decode_kwargs.setdefault("image_size", self.config.input_size)
        return decode_numpy(cls.float().cpu().numpy(), box.float().cpu().numpy(), q.float().cpu().numpy(),
                            self.points.cpu().numpy(), **decode_kwargs)


def build_detector(arch: str = "resnet18", num_classes: int = 2, width_mult: float = 0.5,
                   input_size: tuple[int, int] = (320, 320), strides: tuple[int, ...] = (8, 16, 32),
                   pretrained: str | None = None, pretrained_sha256: str | None = None,
                   **kwargs) -> Detector:
    """A detector from scratch; ``pretrained`` (a local path or URL you name) initialises the
    backbone from a classifier checkpoint of the same arch/width (or a full detector checkpoint)."""
    model = Detector(DetectorConfig(arch=arch, num_classes=num_classes, width_mult=width_mult,
                                    input_size=tuple(input_size), strides=tuple(strides), **kwargs))
    if pretrained:
        try:  # a whole detector checkpoint first, else a classifier/backbone one
            pretrained_mod.load_into(model, pretrained, pretrained_sha256, prefix="model.")
        except Exception:  # noqa: BLE001 - fall back to the backbone
            pretrained_mod.load_into(model.backbone, pretrained, pretrained_sha256)
    return model


# ----------------------------------------------------------------------------------------------
# Targets and loss
# ----------------------------------------------------------------------------------------------

class DetectionLoss(nn.Module):
    """FCOS-style assignment and loss.

    A location is positive for a GT box when it lies inside the box and within
    ``center_radius`` x stride of the box centre, and its max(l, t, r, b) distance falls in its
    level's size range; ties go to the smallest box. A GT box left without any location (tiny
    boxes) takes its nearest stride-8 (finest level) location if that one is free.
    Losses: sigmoid focal (normalised by the number of positives), GIoU weighted by the centerness
    target, BCE of the quality logit against the centerness target.
    """

    def __init__(self, points: torch.Tensor, point_strides: torch.Tensor, size_ranges: list[tuple[float, float]],
                 strides: tuple[int, ...], num_classes: int, center_radius: float = 1.5,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.register_buffer("points", points.clone(), persistent=False)
        self.register_buffer("point_strides", point_strides.clone(), persistent=False)
        lo = torch.empty_like(point_strides)
        hi = torch.empty_like(point_strides)
        for s, (a, b) in zip(strides, size_ranges):
            m = point_strides == float(s)
            lo[m], hi[m] = a, b
        self.register_buffer("range_lo", lo, persistent=False)
        self.register_buffer("range_hi", hi, persistent=False)
        self.num_classes = num_classes
        self.center_radius = center_radius
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.weights = {"cls": 1.0, "box": 1.0, "quality": 1.0, **(weights or {})}

    @classmethod
    def for_model(cls, model: Detector, **kwargs) -> "DetectionLoss":
        cfg = model.config
        return cls(model.points, model.point_strides, cfg.size_ranges(), cfg.strides, cfg.num_classes, **kwargs)

    @torch.no_grad()
    def assign(self, boxes: torch.Tensor, labels: torch.Tensor):
        """One image: ``boxes [M, 4]`` xyxy, ``labels [M]`` -> (``gt_index [A]`` (-1: background),
        ``ltrb_target [A, 4]``, ``centerness [A]``)."""
        pts = self.points
        a = pts.shape[0]
        boxes = boxes.to(pts).reshape(-1, 4)
        m = boxes.shape[0]
        if m == 0:
            return (torch.full((a,), -1, dtype=torch.long, device=pts.device), pts.new_zeros(a, 4), pts.new_zeros(a))
        x, y = pts[:, 0:1], pts[:, 1:2]  # [A, 1]
        ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2)  # [A, M, 4]
        inside = ltrb.min(dim=2).values > 0
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        r = self.point_strides[:, None] * self.center_radius
        near = ((x - cx).abs() < r) & ((y - cy).abs() < r)
        max_d = ltrb.max(dim=2).values
        in_range = (max_d > self.range_lo[:, None]) & (max_d <= self.range_hi[:, None])
        ok = inside & near & in_range  # [A, M]
        # tiny boxes with no location: their nearest finest-level location
        missing = ~ok.any(0)
        if missing.any():
            finest = self.point_strides == self.point_strides.min()
            d = (x - cx) ** 2 + (y - cy) ** 2  # [A, M]
            d = d.masked_fill(~finest[:, None], math.inf)
            nearest = d.argmin(0)  # [M]
            idx = torch.nonzero(missing).flatten()
            ok[nearest[idx], idx] = True
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).expand(a, m)
        area = area.masked_fill(~ok, math.inf)
        min_area, gt = area.min(dim=1)
        gt = torch.where(torch.isfinite(min_area), gt, torch.full_like(gt, -1))
        target = ltrb[torch.arange(a, device=pts.device), gt.clamp(min=0)]  # [A, 4]
        pos = gt >= 0
        t = target.clamp(min=0)
        lr, tb = t[:, 0::2], t[:, 1::2]
        ctr = torch.sqrt((lr.min(1).values / lr.max(1).values.clamp(min=1e-6)) *
                         (tb.min(1).values / tb.max(1).values.clamp(min=1e-6)))
        ctr = torch.where(pos, ctr.clamp(min=0.05), torch.zeros_like(ctr))  # forced edge locations still count
        return gt, target, ctr

    def _ignored(self, targets: list[dict], pos_mask: torch.Tensor) -> torch.Tensor | None:
        """``[N, A]`` background locations inside a target's ``ignore`` boxes (crowds, barely visible
        people), or None when no target has any."""
        if not any(len(t.get("ignore", ())) for t in targets):
            return None
        out = torch.zeros_like(pos_mask)
        for i, tgt in enumerate(targets):
            ign = torch.as_tensor(tgt.get("ignore", ()), dtype=torch.float32, device=pos_mask.device).reshape(-1, 4)
            if len(ign):
                out[i] = _ignore_mask(self.points, ign) & ~pos_mask[i]
        return out

    def forward(self, outputs, targets: list[dict]) -> dict[str, torch.Tensor]:
        """``targets``: per image ``boxes [M, 4]`` xyxy input pixels, ``labels [M]`` and optionally
        ``ignore [K, 4]`` regions where background locations get no classification loss."""
        cls_logits, box_ltrb, quality = (o.float() for o in outputs)  # losses in fp32 under bf16 autocast
        n, a, c = cls_logits.shape
        cls_t = torch.zeros_like(cls_logits)
        pos_mask = torch.zeros(n, a, dtype=torch.bool, device=cls_logits.device)
        ltrb_t = box_ltrb.new_zeros(n, a, 4)
        ctr_t = box_ltrb.new_zeros(n, a)
        for i, tgt in enumerate(targets):
            boxes = torch.as_tensor(tgt["boxes"], dtype=torch.float32, device=cls_logits.device).reshape(-1, 4)
            labels = torch.as_tensor(tgt["labels"], dtype=torch.long, device=cls_logits.device).reshape(-1)
            gt, t, ctr = self.assign(boxes, labels)
            pos = gt >= 0
            pos_mask[i] = pos
            if pos.any():
                cls_t[i, pos, labels[gt[pos]]] = 1.0
            ltrb_t[i], ctr_t[i] = t, ctr
        num_pos = pos_mask.sum().clamp(min=1).float()
        focal = sigmoid_focal_loss(cls_logits, cls_t, alpha=self.focal_alpha, gamma=self.focal_gamma,
                                   reduction="none")
        ignore = self._ignored(targets, pos_mask)
        if ignore is not None:  # background locations inside ignore regions: no classification loss
            focal = focal * (~ignore).unsqueeze(-1).to(focal.dtype)
        loss_cls = focal.sum() / num_pos
        if pos_mask.any():
            pts = self.points.expand(n, a, 2)[pos_mask]
            pred = ltrb_to_xyxy_t(pts, box_ltrb[pos_mask])
            tgt_boxes = ltrb_to_xyxy_t(pts, ltrb_t[pos_mask])
            w = ctr_t[pos_mask]
            giou = generalized_box_iou_loss(pred, tgt_boxes, reduction="none")
            loss_box = (giou * w).sum() / w.sum().clamp(min=1e-6)
            loss_q = F.binary_cross_entropy_with_logits(quality[pos_mask], w, reduction="sum") / num_pos
        else:  # keep the graph connected (and the loss finite) on images without boxes
            loss_box = box_ltrb.sum() * 0.0
            loss_q = quality.sum() * 0.0
        total = (self.weights["cls"] * loss_cls + self.weights["box"] * loss_box
                 + self.weights["quality"] * loss_q)
        return {"loss": total, "loss_cls": loss_cls.detach(), "loss_box": loss_box.detach(),
                "loss_quality": loss_q.detach(), "num_pos": pos_mask.sum().detach()}


def _ignore_mask(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``[A]``: locations inside any of ``boxes [K, 4]``."""
    x, y = points[:, 0:1], points[:, 1:2]
    inside = (x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])
    return inside.any(1)


def ltrb_to_xyxy_t(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def config_dict(model: Detector) -> dict:
    """The builder arguments of ``model`` (e.g. for an export bundle)."""
    d = asdict(model.config)
    d["input_size"], d["strides"] = list(d["input_size"]), list(d["strides"])
    return d
