"""Decoding of the single-stage detector's raw outputs, numpy only (no torch), shippable alone.

The detector (``vision.models.detector``) outputs, per image, for ``A`` fixed locations:
``cls_logits [N, A, C]``, ``box_ltrb [N, A, 4]`` (distances left/top/right/bottom in input pixels)
and ``quality [N, A]`` logits; ``points [A, 2]`` are the locations' (x, y) centres in input pixels
(recomputed by :func:`make_points` from the input size and strides). Boxes come back as xyxy float32
input pixels.

Detector bundles (``bundle.json`` with ``task: detection``) carry, besides the common fields
(``labels``, ``preprocess`` with ``resize: letterbox``, ``models.{fp32,int8}.file``):

* ``models.<precision>.outputs``: ``["cls_logits", "box_ltrb", "quality"]`` (the graph's output order);
* ``decode``: ``{"input_size": [H, W], "strides": [8, 16, 32], "score_threshold", "nms_iou",
  "max_detections", "class_agnostic", "pre_nms_topk"}``: everything :func:`decode_numpy` needs.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)  # overflow-free logistic


def make_points(input_size, strides) -> np.ndarray:
    """Location centres ``[A, 2]`` (x, y) in input pixels, level by level, row-major (as the model's
    ``points`` buffer, :func:`vision.models.detector.make_points`)."""
    pts = []
    for s in strides:
        s = int(s)
        h, w = int(input_size[0]) // s, int(input_size[1]) // s
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        pts.append(np.stack([(xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s], axis=1))
    return np.concatenate(pts).astype(np.float32)


def ltrb_to_xyxy(points: np.ndarray, ltrb: np.ndarray) -> np.ndarray:
    """``points [..., 2]`` (x, y) and distances ``ltrb [..., 4]`` -> boxes ``[..., 4]`` xyxy."""
    points = np.asarray(points, dtype=np.float32)
    ltrb = np.asarray(ltrb, dtype=np.float32)
    return np.concatenate([points - ltrb[..., :2], points + ltrb[..., 2:]], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a [K, 4]`` and ``b [M, 4]`` -> ``[K, M]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS (same result as ``torchvision.ops.nms``): indices kept, by decreasing score."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Per-class NMS in one pass (boxes of each class offset apart), like ``torchvision.ops.batched_nms``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    offset = np.asarray(labels, dtype=np.float64).reshape(-1, 1) * (boxes.max() - boxes.min() + 1.0)
    return nms(boxes + offset, scores, iou_threshold)


def decode_numpy(cls_logits: np.ndarray, box_ltrb: np.ndarray, quality: np.ndarray, points: np.ndarray,
                 score_threshold: float = 0.25, nms_iou: float = 0.5, max_detections: int = 100,
                 class_agnostic: bool = False, pre_nms_topk: int = 1000,
                 image_size: tuple[int, int] | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Raw outputs -> per image ``(boxes [K, 4] float32 xyxy, scores [K] float32, labels [K] int64)``.

    score = sqrt(sigmoid(cls) * sigmoid(quality)). A location may yield several classes unless
    ``class_agnostic`` (then only its best class, and NMS runs across classes). ``image_size``
    ``(height, width)`` clips the boxes to the image.
    """
    cls_logits = np.asarray(cls_logits, dtype=np.float32)
    box_ltrb = np.asarray(box_ltrb, dtype=np.float32)
    quality = np.asarray(quality, dtype=np.float32)
    if cls_logits.ndim == 2:  # a single image without the batch axis
        cls_logits, box_ltrb, quality = cls_logits[None], box_ltrb[None], quality[None]
    quality = quality.reshape(quality.shape[0], -1)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    n, a, c = cls_logits.shape
    if box_ltrb.shape != (n, a, 4) or quality.shape != (n, a) or points.shape != (a, 2):
        raise ValueError(f"inconsistent detector outputs: cls {cls_logits.shape}, box {box_ltrb.shape}, "
                         f"quality {quality.shape}, points {points.shape}")
    results = []
    for i in range(n):
        scores = np.sqrt(_sigmoid(cls_logits[i]) * _sigmoid(quality[i])[:, None])  # [A, C]
        if class_agnostic:
            labels = scores.argmax(1)
            scores = scores[np.arange(a), labels]
            locs = np.arange(a)
        else:
            locs, labels = np.nonzero(scores > score_threshold)
            scores = scores[locs, labels]
        sel = scores > score_threshold
        locs, labels, scores = locs[sel], labels[sel], scores[sel]
        if scores.size > pre_nms_topk:
            top = np.argpartition(-scores, pre_nms_topk - 1)[:pre_nms_topk]
            locs, labels, scores = locs[top], labels[top], scores[top]
        boxes = ltrb_to_xyxy(points[locs], box_ltrb[i, locs])
        if image_size is not None:
            h, w = image_size
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
        if class_agnostic:
            keep = nms(boxes, scores, nms_iou)
        else:
            keep = batched_nms(boxes, scores, labels, nms_iou)
        keep = keep[:max_detections]
        results.append((boxes[keep].astype(np.float32).reshape(-1, 4), scores[keep].astype(np.float32),
                        labels[keep].astype(np.int64)))
    return results
