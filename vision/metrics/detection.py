"""Detection evaluation for surveillance: COCO AP via pycocotools, sliced by object height and provenance.

Conventions
-----------
* **Boxes are in original image pixels**, ``x1, y1, x2, y2`` with continuous coordinates (``x2 = x1 + w``,
  see :mod:`vision.data.boxes`), for ground truth (:class:`~vision.data.boxes.DetectionSample`) and for
  predictions alike. Undo any resize / letterbox before evaluating.
* **Predictions**: one entry per sample, ``(boxes [K, 4] xyxy, scores [K], labels [K])`` with ``labels``
  integer indices into ``classes`` (a mapping with keys ``boxes``/``scores``/``labels`` is accepted too;
  numpy arrays, lists or CPU/GPU torch tensors). Only the ``max_detections`` highest-scoring predictions of
  each image are evaluated (pycocotools itself would apply the limit per image *and class*).
* **Ignore regions**: a ground-truth box whose ``attrs["iscrowd"]`` or ``attrs["ignore"]`` is truthy becomes
  a COCO crowd region (``iscrowd=1``): it is never a false negative and detections on it (intersection
  over the *detection's* area >= the IoU threshold, the COCO crowd rule) are never false positives. Other
  attributes (``difficult``, ``visibility``...) do not change the evaluation.
* **Height buckets**: objects are sliced by their pixel **height** (``y2 - y1``), not by area as COCO does:
  a standing person 30 px tall is small however wide its box. Buckets are half-open ``[lo, hi)`` and
  named ``"<50px"``, ``"50-150px"``, ``">150px"`` for the default ``((0, 50), (50, 150), (150, inf))``.
  The slicing is pycocotools' own area-range logic: each ground-truth annotation's and each detection's
  ``area`` field holds its height and ``params.areaRng`` holds the height ranges, so ground truth outside
  a bucket is ignored and *unmatched* detections outside it are ignored, exactly the COCO way.
* **Undefined = -1** (:data:`UNDEFINED`): an AP / recall with no (non-ignored) ground truth to measure
  it against is ``-1.0``, pycocotools' own convention (never NaN, so the report is strict JSON and a
  number MLflow accepts). It is *undefined*, not bad: filter ``>= 0`` before averaging. When ground truth
  exists but nothing is found the value is ``0.0``. False positives of a class without ground truth leave
  that class's AP at -1 (COCO semantics) but still count in ``num_pred``.
* **Slices**: images are grouped by ``source``, ``kind`` (``kinds[source]``, default ``"real"``) or any
  dotted path into ``sample.meta`` (``sequence``, ``params.time_of_day`` for scene-engine frames read back
  with :func:`~vision.data.detection.read_coco`), and each group is evaluated on its own. Images without
  the field (or with ``None`` there) go to ``"unknown"``.
* Evaluation is deterministic: images get ids in input order, predictions are sorted by score with a
  stable sort (ties keep their input order), and pycocotools' progress printing is silenced. Metrics are
  rounded to 12 decimals, which removes the ``eps`` pycocotools adds to every precision denominator.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vision.data.boxes import DetectionSample
from vision.utils.io import atomic_write_bytes

#: value of a metric that has no ground truth to be measured against (pycocotools' convention)
UNDEFINED = -1.0
#: slice value for images that lack the slice field
UNKNOWN = "unknown"
#: metrics are rounded to this many decimals (see :func:`_clean`)
DECIMALS = 12
DEFAULT_SIZE_BUCKETS: tuple[tuple[float, float], ...] = ((0, 50), (50, 150), (150, math.inf))

Prediction = tuple[Any, Any, Any] | Mapping[str, Any]
_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


# -- inputs -----------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on a GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _prediction_arrays(pred: Prediction, sample: DetectionSample, n_classes: int) -> _Arrays:
    """``(boxes [K, 4] float64, scores [K] float64, labels [K] int64)``, validated."""
    if isinstance(pred, Mapping):
        try:
            pred = (pred["boxes"], pred["scores"], pred["labels"])
        except KeyError as e:
            raise ValueError(f"{sample.path}: prediction mapping lacks {e.args[0]!r}") from e
    try:
        b, s, lab = pred
    except (TypeError, ValueError) as e:
        raise ValueError(f"{sample.path}: a prediction must be (boxes, scores, labels), got {type(pred)}") from e
    boxes = _to_numpy(b).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(s).astype(np.float64).reshape(-1)
    labels_f = _to_numpy(lab).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels_f)):
        raise ValueError(f"{sample.path}: prediction has {len(boxes)} boxes, {len(scores)} scores and "
                         f"{len(labels_f)} labels")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"{sample.path}: prediction has non-finite boxes or scores")
    if len(labels_f) and (not np.all(np.equal(np.mod(labels_f, 1), 0))
                          or labels_f.min() < 0 or labels_f.max() >= n_classes):
        raise ValueError(f"{sample.path}: prediction labels must be integers in [0, {n_classes}), "
                         f"got {sorted(set(labels_f.tolist()))[:10]}")
    return boxes, scores, labels_f.astype(np.int64)


def _is_ignore(attrs: Mapping[str, Any]) -> bool:
    return bool(attrs.get("iscrowd")) or bool(attrs.get("ignore"))


def _class_index(classes: Sequence[str]) -> dict[str, int]:
    index = {str(c): i for i, c in enumerate(classes)}
    if len(index) != len(classes):
        raise ValueError(f"classes contains duplicates: {list(classes)}")
    return index


def _gt_labels(sample: DetectionSample, index: Mapping[str, int]) -> list[int]:
    out = []
    for b in sample.boxes:
        if b.label not in index:
            raise ValueError(f"{sample.path}: ground-truth label {b.label!r} is not one of the classes "
                             f"{list(index)}")
        out.append(index[b.label])
    return out


def _prepare(samples: Sequence[DetectionSample], predictions: Sequence[Prediction],
             classes: Sequence[str]) -> tuple[list[list[int]], list[_Arrays]]:
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions (one entry per sample)")
    index = _class_index(classes)
    gt_labels = [_gt_labels(s, index) for s in samples]
    preds = [_prediction_arrays(p, s, len(classes)) for s, p in zip(samples, predictions)]
    return gt_labels, preds


# -- slicing helpers --------------------------------------------------------------------------------
def bucket_name(lo: float, hi: float) -> str:
    """``(0, 50) -> "<50px"``, ``(50, 150) -> "50-150px"``, ``(150, inf) -> ">150px"``."""
    if lo <= 0 and math.isinf(hi):
        return "all"
    if lo <= 0:
        return f"<{hi:g}px"
    if math.isinf(hi):
        return f">{lo:g}px"
    return f"{lo:g}-{hi:g}px"


def _height_range(lo: float, hi: float) -> list[float]:
    """pycocotools' ranges are closed ``[lo, hi]``; the largest float below ``hi`` makes them ``[lo, hi)``."""
    return [float(lo), math.inf if math.isinf(hi) else float(np.nextafter(hi, -math.inf))]


def slice_value(sample: DetectionSample, field: str, kinds: Mapping[str, str] | None = None) -> str:
    """The value of slice ``field`` for ``sample`` (see the module docstring); ``"unknown"`` when absent."""
    if field == "source":
        return str(sample.source)
    if field == "kind":
        return str((kinds or {}).get(sample.source, "real"))
    value: Any = sample.meta
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return UNKNOWN
        value = value[part]
    return UNKNOWN if value is None else str(value)


# -- pycocotools ------------------------------------------------------------------------------------
class _CocoData:
    """Ground truth and detections as pycocotools objects, with ``area`` = box height on both sides."""

    def __init__(self, samples: Sequence[DetectionSample], gt_labels: list[list[int]], preds: list[_Arrays],
                 classes: Sequence[str], max_detections: int) -> None:
        images = [{"id": i + 1, "width": int(s.width), "height": int(s.height), "file_name": s.relpath}
                  for i, s in enumerate(samples)]
        categories = [{"id": c + 1, "name": str(name)} for c, name in enumerate(classes)]
        anns = []
        for i, (s, labels) in enumerate(zip(samples, gt_labels)):
            for b, c in zip(s.boxes, labels):
                w, h = max(0.0, float(b.width)), max(0.0, float(b.height))
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1,
                             "bbox": [float(b.x1), float(b.y1), w, h], "area": h,
                             "iscrowd": int(_is_ignore(b.attrs))})
        results = []
        self.num_pred = 0
        for i, (boxes, scores, labels) in enumerate(preds):
            order = np.argsort(-scores, kind="stable")[:max_detections]
            self.num_pred += len(order)
            for j in order:
                x1, y1, x2, y2 = boxes[j]
                results.append({"image_id": i + 1, "category_id": int(labels[j]) + 1,
                                "bbox": [float(x1), float(y1), max(0.0, float(x2 - x1)), max(0.0, float(y2 - y1))],
                                "score": float(scores[j])})
        with contextlib.redirect_stdout(io.StringIO()):
            self.gt = COCO()
            self.gt.dataset = {"images": images, "categories": categories, "annotations": anns}
            self.gt.createIndex()
            if results:
                self.dt = self.gt.loadRes(results)
            else:  # loadRes cannot take an empty list (it looks at results[0])
                self.dt = COCO()
                self.dt.dataset = {"images": list(images), "categories": categories, "annotations": []}
                self.dt.createIndex()
        # loadRes sets area = w * h; the height buckets need area = height (see the module docstring)
        for ann in self.dt.dataset["annotations"]:
            ann["area"] = ann["bbox"][3]
        self.gt_anns = anns
        self.num_classes = len(classes)
        # per-annotation columns for counting: image id, class (1-based), height, crowd; detections per image
        self._g = np.array([[a["image_id"], a["category_id"], a["area"], a["iscrowd"]] for a in anns],
                           dtype=np.float64).reshape(-1, 4)
        self.pred_per_image = np.bincount([a["image_id"] for a in self.dt.dataset["annotations"]],
                                          minlength=len(samples) + 1)

    def num_gt(self, image_ids: Sequence[int] | None = None, cat: int | None = None,
               rng: Sequence[float] | None = None) -> int:
        """Non-ignored ground truth boxes in the given images / class (0-based) / height range."""
        g = self._g
        keep = g[:, 3] == 0
        if image_ids is not None:
            keep &= np.isin(g[:, 0], np.asarray(list(image_ids), dtype=np.float64))
        if cat is not None:
            keep &= g[:, 1] == cat + 1
        if rng is not None:
            keep &= (g[:, 2] >= rng[0]) & (g[:, 2] <= rng[1])
        return int(keep.sum())

    def evaluate(self, image_ids: Sequence[int], ranges: Sequence[Sequence[float]],
                 max_detections: int) -> COCOeval:
        ev = COCOeval(self.gt, self.dt, iouType="bbox")
        ev.params.imgIds = list(image_ids)
        ev.params.catIds = list(range(1, self.num_classes + 1))
        ev.params.areaRng = [list(r) for r in ranges]
        ev.params.areaRngLbl = [f"r{k}" for k in range(len(ranges))]
        ev.params.maxDets = [max_detections]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        return ev


def _clean(x: float) -> float:
    """Round to :data:`DECIMALS`: pycocotools computes precision as ``tp / (tp + fp + eps)``, so a lone
    true positive scores ``1 - 2e-16``; rounding gives back the exact value (1.0, 0.5...)."""
    return round(float(x), DECIMALS)


def _mean_defined(x: np.ndarray) -> float:
    """Mean of the entries > -1 (pycocotools' rule), or :data:`UNDEFINED` when there are none."""
    x = x[x > -1]
    return _clean(np.mean(x)) if x.size else UNDEFINED


def _iou_index(ev: COCOeval, thr: float) -> int:
    return int(np.argmin(np.abs(ev.params.iouThrs - thr)))


def _ap(ev: COCOeval, a: int = 0, k: int | None = None, iou: float | None = None) -> float:
    """AP from ``ev.eval["precision"]`` [T, R, K, A, M] for area range ``a``, class ``k`` (all when None)."""
    p = ev.eval["precision"][:, :, :, a, -1]
    if iou is not None:
        p = p[_iou_index(ev, iou)][None]
    if k is not None:
        p = p[:, :, k]
    return _mean_defined(p)


def _ar(ev: COCOeval, a: int = 0) -> float:
    return _mean_defined(ev.eval["recall"][:, :, a, -1])


def _summary(ev: COCOeval, a: int = 0) -> dict[str, float]:
    return {"ap": _ap(ev, a), "ap50": _ap(ev, a, iou=0.5), "ap75": _ap(ev, a, iou=0.75), "ar100": _ar(ev, a)}


# -- public API -------------------------------------------------------------------------------------
def evaluate_detections(samples: Sequence[DetectionSample], predictions: Sequence[Prediction],
                        classes: Sequence[str], *, slice_by: Sequence[str] = ("source", "kind"),
                        kinds: Mapping[str, str] | None = None,
                        size_buckets: Sequence[tuple[float, float]] = DEFAULT_SIZE_BUCKETS,
                        max_detections: int = 100) -> dict[str, Any]:
    """COCO-style detection metrics (pycocotools) with height buckets and provenance slices.

    Returns a strict-JSON dict (see the module docstring for conventions; ``-1`` = undefined)::

        ap, ap50, ap75, ar100           mAP@[.5:.95], AP@.5, AP@.75, recall@max_detections (mean over IoUs)
        num_images, num_gt, num_ignored, num_pred
                                        num_gt excludes ignore regions (counted in num_ignored);
                                        num_pred counts the predictions evaluated (<= max_detections / image)
        per_class: {name: {ap, ap50, ap75, num_gt, num_pred}}
        size:      {"<50px": {ap, ap50, ap75, ar100, num_gt}, "50-150px": ..., ">150px": ...}  (by height)
        slices:    {field: {value: {ap, ap50, ap75, ar100, num_images, num_gt, num_pred}}}
        pr_curve:  {name: {"recall": [101 thresholds], "precision": [101]}}  at IoU 0.5, all sizes; only
                   classes with ground truth (COCO's interpolated precision: max precision at recall >= r)
        params:    {iou_thresholds, max_detections, size_buckets: {name: [lo, hi or null]}, slice_by}

    ``ar100`` is named after COCO's AR@100 but uses ``max_detections``.
    """
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    gt_labels, preds = _prepare(samples, predictions, classes)
    buckets = [(float(lo), float(hi)) for lo, hi in size_buckets]
    names = [bucket_name(lo, hi) for lo, hi in buckets]
    if len(set(names)) != len(names) or any(hi <= lo for lo, hi in buckets):
        raise ValueError(f"size_buckets must be distinct (lo, hi) ranges with lo < hi, got {list(size_buckets)}")
    ranges = [[0.0, math.inf]] + [_height_range(lo, hi) for lo, hi in buckets]
    data = _CocoData(samples, gt_labels, preds, classes, max_detections)
    image_ids = list(range(1, len(samples) + 1))
    params = {"iou_thresholds": [0.5, 0.95, 0.05], "max_detections": int(max_detections),
              "size_buckets": {n: [lo, None if math.isinf(hi) else hi] for n, (lo, hi) in zip(names, buckets)},
              "slice_by": list(slice_by)}
    pred_per_class = np.zeros(len(classes), dtype=np.int64)
    for ann in data.dt.dataset["annotations"]:
        pred_per_class[ann["category_id"] - 1] += 1

    report: dict[str, Any] = {"num_images": len(samples), "num_gt": data.num_gt(),
                              "num_ignored": sum(a["iscrowd"] for a in data.gt_anns), "num_pred": data.num_pred}
    if not samples:
        report.update({k: UNDEFINED for k in ("ap", "ap50", "ap75", "ar100")})
        report.update({"per_class": {str(c): {"ap": UNDEFINED, "ap50": UNDEFINED, "ap75": UNDEFINED,
                                              "num_gt": 0, "num_pred": 0} for c in classes},
                       "size": {n: {"ap": UNDEFINED, "ap50": UNDEFINED, "ap75": UNDEFINED, "ar100": UNDEFINED,
                                    "num_gt": 0} for n in names},
                       "slices": {f: {} for f in slice_by}, "pr_curve": {}, "params": params})
        return report

    ev = data.evaluate(image_ids, ranges, max_detections)
    report.update(_summary(ev))
    report["per_class"] = {
        str(name): {"ap": _ap(ev, k=k), "ap50": _ap(ev, k=k, iou=0.5), "ap75": _ap(ev, k=k, iou=0.75),
                    "num_gt": data.num_gt(cat=k), "num_pred": int(pred_per_class[k])}
        for k, name in enumerate(classes)}
    report["size"] = {n: {**_summary(ev, a + 1), "num_gt": data.num_gt(rng=ranges[a + 1])}
                      for a, n in enumerate(names)}

    has_gt = [report["per_class"][str(name)]["num_gt"] > 0 for name in classes]
    t50 = _iou_index(ev, 0.5)
    rec = [float(r) for r in ev.params.recThrs]
    report["pr_curve"] = {
        str(name): {"recall": rec, "precision": [_clean(p) for p in ev.eval["precision"][t50, :, k, 0, -1]]}
        for k, name in enumerate(classes) if has_gt[k]}

    slices: dict[str, dict[str, dict[str, Any]]] = {}
    for field in slice_by:
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(slice_value(s, field, kinds), []).append(i + 1)
        out = {}
        for value, ids in sorted(groups.items()):
            # one group holding every image is the whole set: reuse the main evaluation
            sev = ev if len(ids) == len(samples) else data.evaluate(ids, ranges[:1], max_detections)
            out[value] = {**_summary(sev), "num_images": len(ids), "num_gt": data.num_gt(image_ids=ids),
                          "num_pred": int(data.pred_per_image[ids].sum())}
        slices[field] = out
    report["slices"] = slices
    report["params"] = params
    return report


def _iou_matrix(a: np.ndarray, b: np.ndarray, crowd: bool = False) -> np.ndarray:
    """IoU of xyxy boxes ``a`` [N, 4] vs ``b`` [M, 4]; with ``crowd`` the intersection over ``a``'s area."""
    a, b = a.reshape(-1, 4), b.reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    denom = area_a[:, None] if crowd else area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, inter / denom, 0.0)


def match_detections(samples: Sequence[DetectionSample], predictions: Sequence[Prediction],
                     classes: Sequence[str], iou: float = 0.5) -> list[dict[str, Any]]:
    """Greedy per-image matching (by descending score, same class, IoU >= ``iou``) for error analysis.

    Returns, image by image, one ``{"kind": "tp", "index", "count"}`` record (true positives in that
    image), then ``{"kind": "fp", "index", "box", "score", "label", "best_iou", "height", "cause"}`` per
    false positive and ``{"kind": "fn", "index", "box", "label", "height", "best_iou"}`` per missed ground
    truth. ``index`` is the image's position in ``samples``, ``box`` is xyxy pixels, ``label`` the class
    name. An FP's ``best_iou`` is its highest IoU with any same-class ground truth, matched or not; its
    ``cause`` is ``"duplicate"`` (that box was already taken by a higher score), ``"localization"``
    (0.1 <= best IoU < ``iou``), ``"class"`` (it overlaps another class's box by >= ``iou``) or
    ``"background"``. An FN's ``best_iou`` is its highest IoU with any same-class prediction.
    Ignore regions (``iscrowd`` / ``ignore``) are never FNs, and a prediction covering one (intersection over
    the prediction's area >= ``iou``) is not an FP. This is the COCO matching at one IoU threshold without
    the per-image detection limit; use :func:`evaluate_detections` for AP.
    """
    gt_labels, preds = _prepare(samples, predictions, classes)
    records: list[dict[str, Any]] = []
    for i, (s, glab, (boxes, scores, labels)) in enumerate(zip(samples, gt_labels, preds)):
        gbox = s.boxes_array()
        glab_a = np.asarray(glab, dtype=np.int64)
        ign = np.array([_is_ignore(b.attrs) for b in s.boxes], dtype=bool)
        ious = _iou_matrix(boxes, gbox)
        ioa = _iou_matrix(boxes, gbox, crowd=True)
        same = labels[:, None] == glab_a[None, :]
        matched = np.zeros(len(gbox), dtype=bool)
        tp, fps = 0, []
        for j in np.argsort(-scores, kind="stable"):
            cand = same[j] & ~ign & ~matched
            if cand.any():
                g = int(np.argmax(np.where(cand, ious[j], -1.0)))
                if ious[j, g] >= iou:
                    matched[g] = True
                    tp += 1
                    continue
            if (same[j] & ign & (ioa[j] >= iou)).any():
                continue  # on an ignore region
            regular = same[j] & ~ign
            best = float(ious[j][regular].max()) if regular.any() else 0.0
            other = ~same[j] & ~ign
            if best >= iou:
                cause = "duplicate"
            elif best >= 0.1:
                cause = "localization"
            elif other.any() and float(ious[j][other].max()) >= iou:
                cause = "class"
            else:
                cause = "background"
            x1, y1, x2, y2 = (float(v) for v in boxes[j])
            fps.append({"kind": "fp", "index": i, "box": [x1, y1, x2, y2], "score": float(scores[j]),
                        "label": str(classes[labels[j]]), "best_iou": best, "height": y2 - y1, "cause": cause})
        records.append({"kind": "tp", "index": i, "count": tp})
        records.extend(fps)
        for g in np.flatnonzero(~matched & ~ign):
            b = s.boxes[g]
            col = ious[:, g][same[:, g]]
            records.append({"kind": "fn", "index": i, "box": [float(v) for v in b.xyxy], "label": b.label,
                            "height": float(b.height), "best_iou": float(col.max()) if col.size else 0.0})
    return records


def _crop(img: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, tuple[float, float]]:
    """The box with some context around it, clipped to the image; returns the crop and its origin."""
    H, W = img.shape[:2]
    x1, y1, x2, y2 = box
    pad = 0.25 * max(x2 - x1, y2 - y1) + 8
    cx0, cy0 = int(np.clip(math.floor(x1 - pad), 0, W)), int(np.clip(math.floor(y1 - pad), 0, H))
    cx1, cy1 = int(np.clip(math.ceil(x2 + pad), 0, W)), int(np.clip(math.ceil(y2 + pad), 0, H))
    if cx1 <= cx0 or cy1 <= cy0:  # box outside the image: show the whole frame
        return img, (0.0, 0.0)
    return img[cy0:cy1, cx0:cx1], (float(cx0), float(cy0))


def _as_rgb(img: Any) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    return a


def _save_figure(fig: Any, out_png: str | Path, dpi: int = 100) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(out_png, buf.getvalue())


def error_gallery(samples: Sequence[DetectionSample], predictions: Sequence[Prediction], classes: Sequence[str],
                  out_png: str | Path, k: int = 16, iou: float = 0.5,
                  read: Callable[[DetectionSample], np.ndarray] | None = None) -> Path | None:
    """PNG grid of the ``k`` highest-scoring false positives and the ``k`` tallest missed ground truths.

    Each tile is a crop with context and the box drawn (red: false positive, titled score / label / cause /
    height; orange: missed, titled label / height; ``#i`` is the image's index in ``samples``). ``read(sample) -> HxWx3 uint8`` defaults to
    :func:`vision.runtime.preprocess.read_image` of ``sample.path``. Written atomically; returns the path,
    or None (nothing written) when there are no errors.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if read is None:
        from vision.runtime.preprocess import read_image

        def read(sample: DetectionSample) -> np.ndarray:
            return read_image(sample.path)

    records = match_detections(samples, predictions, classes, iou=iou)
    fps = sorted((r for r in records if r["kind"] == "fp"), key=lambda r: -r["score"])[:k]
    fns = sorted((r for r in records if r["kind"] == "fn"), key=lambda r: -r["height"])[:k]
    if not fps and not fns:
        return None
    cols = max(1, min(8, max(len(fps), len(fns))))
    rows_fp, rows_fn = math.ceil(len(fps) / cols), math.ceil(len(fns) / cols)
    rows = rows_fp + rows_fn
    fig = Figure(figsize=(2.0 * cols, 2.4 * rows))
    cache: dict[int, np.ndarray] = {}
    tiles = [(r, 0, n) for n, r in enumerate(fps)] + [(r, rows_fp * cols, n) for n, r in enumerate(fns)]
    for r, offset, n in tiles:
        idx = r["index"]
        if idx not in cache:
            cache[idx] = _as_rgb(read(samples[idx]))
        crop, (ox, oy) = _crop(cache[idx], r["box"])
        ax = fig.add_subplot(rows, cols, offset + n + 1)
        ax.imshow(crop, interpolation="nearest")
        x1, y1, x2, y2 = r["box"]
        fp = r["kind"] == "fp"
        ax.add_patch(Rectangle((x1 - ox, y1 - oy), x2 - x1, y2 - y1, fill=False, linewidth=1.5,
                               edgecolor="red" if fp else "orange"))
        title = (f"FP {r['score']:.2f} {r['label']}\n{r['cause']} h={r['height']:.0f} #{idx}" if fp
                 else f"missed {r['label']}\nh={r['height']:.0f}px #{idx}")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{len(fps)} top-scoring false positives, {len(fns)} tallest misses (IoU {iou:g})", fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, out_png)


def pr_curve_figure(report: Mapping[str, Any], out_png: str | Path) -> Path:
    """Plot ``report["pr_curve"]`` (one line per class with ground truth, legend with AP50); atomic PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    per_class = report.get("per_class", {})
    for name, curve in report.get("pr_curve", {}).items():
        ap50 = per_class.get(name, {}).get("ap50", UNDEFINED)
        label = f"{name} (AP50 {ap50:.3f})" if ap50 is not None and ap50 >= 0 else name
        ax.plot(curve["recall"], curve["precision"], label=label, linewidth=1.5)
    if report.get("pr_curve"):
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ap50 = report.get("ap50", UNDEFINED)
    ax.set_title("precision-recall @ IoU 0.5" + (f" (mAP50 {ap50:.3f})" if ap50 is not None and ap50 >= 0 else ""))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, out_png)
