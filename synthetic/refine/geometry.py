"""Does refinement keep the labels valid? Two checks between source and refined frames.

**Edge alignment** (:func:`edge_f1`): Canny edges of both images (thresholds from each image's own gradient
percentiles, so a global change of contrast or colour does not count as a change of geometry), matched
within ``tolerance`` pixels: precision = refined edges near a source edge, recall = source edges near a
refined edge, F1 of the two. 1.0 = every outline where it was; an image shifted by 3 px scores far lower
(:func:`dataset_geometry` reports that shifted control beside the measurement). Measured inside each
labelled box (does the box still enclose the same outline?) and over whole frames.

**Re-id separability** (:func:`reid_separability`): person crops of the labelled identities, described by
colour histograms over horizontal stripes (clothing colours, no learned model), retrieved among the other
frames of the same dataset (Market-1501 protocol, :func:`vision.metrics.reid.evaluate`): rank-1 / mAP on
source crops vs on refined crops, and refined queries against the source gallery.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from vision.errors import DataError
from vision.runtime.preprocess import ImageReadError, read_image


def edge_map(rgb: np.ndarray, percent: float = 10.0) -> np.ndarray:
    """Boolean Canny edges; the high threshold is the ``100 - percent`` percentile of the gradient magnitude."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    gray = cv2.GaussianBlur(gray, (5, 5), 1.0)
    dx = cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3)
    dy = cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3)
    mag = np.hypot(dx.astype(np.float32), dy.astype(np.float32))
    hi = float(np.percentile(mag, 100.0 - percent))
    if hi <= 1e-6:
        return np.zeros(gray.shape, bool)
    return cv2.Canny(dx, dy, 0.5 * hi, hi, L2gradient=True) > 0


def _match(a: np.ndarray, b: np.ndarray, tolerance: int) -> tuple[float | None, float | None]:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    da = cv2.dilate(a.astype(np.uint8), k) > 0
    db = cv2.dilate(b.astype(np.uint8), k) > 0
    na, nb = int(a.sum()), int(b.sum())
    precision = float((b & da).sum() / nb) if nb else None
    recall = float((a & db).sum() / na) if na else None
    return precision, recall


def edge_f1(source: np.ndarray, refined: np.ndarray, mask: np.ndarray | None = None, tolerance: int = 1,
            edges: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float] | None:
    """Edge precision / recall / F1 of ``refined`` against ``source`` (inside ``mask`` when given);
    None when the source has no edge there (nothing to compare)."""
    if source.shape[:2] != refined.shape[:2]:
        raise ValueError(f"source is {source.shape[1]}x{source.shape[0]}, refined {refined.shape[1]}x"
                         f"{refined.shape[0]}: edge alignment compares images of one size")
    es, er = edges if edges is not None else (edge_map(source), edge_map(refined))
    if mask is not None:
        es, er = es & mask, er & mask
    if not es.any():
        return None
    p, r = _match(es, er, tolerance)
    p = 0.0 if p is None else p
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f1}


def gradient_correlation(source: np.ndarray, refined: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Pearson correlation of the Sobel gradient magnitudes (inside ``mask``)."""
    def mag(rgb: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))

    a, b = mag(source), mag(refined)
    if mask is not None:
        a, b = a[mask], b[mask]
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else None


def shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``img`` translated by (dx, dy) pixels, borders replicated (a misaligned control)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def _coco_file(root: Path) -> Path | None:
    for c in (root / "annotations.json", root / "coco" / "annotations.json"):
        if c.is_file():
            return c
    return None


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageReadError as e:
        raise DataError(str(e)) from e


def _box_mask(shape: tuple[int, int], box: Sequence[float], margin: int = 2) -> np.ndarray | None:
    h, w = shape
    x, y, bw, bh = box
    x0, y0 = max(0, int(np.floor(x)) - margin), max(0, int(np.floor(y)) - margin)
    x1, y1 = min(w, int(np.ceil(x + bw)) + margin), min(h, int(np.ceil(y + bh)) + margin)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p10": None, "min": None}
    v = np.asarray(values, float)
    return {"mean": round(float(v.mean()), 4), "p10": round(float(np.percentile(v, 10)), 4),
            "min": round(float(v.min()), 4)}


def dataset_geometry(source_dir: str | Path, refined_dir: str | Path, max_images: int = 16, tolerance: int = 1,
                     shift_px: int = 3, min_box: int = 16) -> dict[str, Any]:
    """Edge alignment between a dataset and its refined copy, on up to ``max_images`` evenly spaced frames:
    per labelled box (boxes >= ``min_box`` px on both sides; COCO datasets) and per frame, beside the same
    measurement for the source against itself shifted by ``shift_px`` (what a misalignment scores)."""
    src, ref = Path(source_dir), Path(refined_dir)
    coco = _coco_file(src)
    items: list[tuple[Path, list[list[float]]]] = []
    if coco is not None:
        doc = json.loads(coco.read_text())
        boxes: dict[int, list[list[float]]] = {}
        for a in doc["annotations"]:
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
        for im in doc["images"]:
            items.append((coco.parent / im["file_name"], boxes.get(im["id"], [])))
    else:
        from vision.runtime.preprocess import IMAGE_EXTENSIONS

        items = [(p, []) for p in sorted(src.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
    if max_images and len(items) > max_images:
        idx = np.unique(np.linspace(0, len(items) - 1, max_images).round().astype(int))
        items = [items[i] for i in idx]
    box_f1, box_f1_shift, frame_f1, frame_f1_shift, corr = [], [], [], [], []
    for path, bxs in items:
        a = _read(path)
        b = _read(ref / path.relative_to(src))
        c = shift(a, shift_px, shift_px)
        ea, eb, ec = edge_map(a), edge_map(b), edge_map(c)
        for val, out in ((edge_f1(a, b, edges=(ea, eb), tolerance=tolerance), frame_f1),
                         (edge_f1(a, c, edges=(ea, ec), tolerance=tolerance), frame_f1_shift)):
            if val is not None:
                out.append(val["f1"])
        g = gradient_correlation(a, b)
        if g is not None:
            corr.append(g)
        for bx in bxs:
            if bx[2] < min_box or bx[3] < min_box:
                continue
            m = _box_mask(a.shape[:2], bx)
            if m is None:
                continue
            v = edge_f1(a, b, m, tolerance, edges=(ea, eb))
            if v is None:
                continue
            box_f1.append(v["f1"])
            s = edge_f1(a, c, m, tolerance, edges=(ea, ec))
            if s is not None:
                box_f1_shift.append(s["f1"])
    return {"images": len(items), "boxes": len(box_f1), "tolerance_px": tolerance,
            "box_edge_f1": _stats(box_f1), "frame_edge_f1": _stats(frame_f1),
            "gradient_correlation": _stats(corr),
            "shifted_control": {"shift_px": shift_px, "box_edge_f1": _stats(box_f1_shift),
                                "frame_edge_f1": _stats(frame_f1_shift)}}


# -- re-id separability --------------------------------------------------------------------------
def stripe_histogram(rgb: np.ndarray, stripes: int = 6, bins: tuple[int, int, int] = (8, 4, 4)) -> np.ndarray:
    """An L2-normalized HSV histogram per horizontal stripe (square-rooted): a clothing-colour descriptor."""
    crop = cv2.resize(rgb, (32, 64), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    feats = []
    for s in np.array_split(np.arange(64), stripes):
        part = hsv[s[0]:s[-1] + 1]
        h = cv2.calcHist([part], [0, 1, 2], None, list(bins), [0, 180, 0, 256, 0, 256]).ravel()
        feats.append(np.sqrt(h / max(h.sum(), 1.0)))
    v = np.concatenate(feats)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def reid_crops(dataset_dir: str | Path, min_height: float = 40.0, min_visible: float = 0.6,
               max_crops: int = 400) -> list[dict[str, Any]]:
    """Person boxes with an identity (COCO ``identity``; identities namespaced per ``scene``) worth a crop."""
    root = Path(dataset_dir)
    coco = _coco_file(root)
    if coco is None:
        raise DataError(f"{root}: no COCO annotations.json (the re-id check needs labelled identities)")
    doc = json.loads(coco.read_text())
    person = {c["id"] for c in doc["categories"] if c["name"] == "person"}
    images = {im["id"]: im for im in doc["images"]}
    out = []
    for a in doc["annotations"]:
        if a["category_id"] not in person or a.get("identity") is None or a["bbox"][3] < min_height:
            continue
        if float(a.get("visible_fraction", 1.0)) < min_visible or a.get("iscrowd"):
            continue
        im = images[a["image_id"]]
        out.append({"file": (coco.parent / im["file_name"]).relative_to(root), "bbox": a["bbox"],
                    "identity": (im.get("scene", 0), a["identity"]), "image_id": a["image_id"],
                    "camera": im.get("camera", 0)})
    if len(out) > max_crops:
        idx = np.unique(np.linspace(0, len(out) - 1, max_crops).round().astype(int))
        out = [out[i] for i in idx]
    return out


def _describe(root: Path, crops: list[dict[str, Any]]) -> np.ndarray:
    cache: dict[Path, np.ndarray] = {}
    feats = []
    for c in crops:
        p = root / c["file"]
        if p not in cache:
            cache.clear()
            cache[p] = _read(p)
        img = cache[p]
        x, y, w, h = c["bbox"]
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(img.shape[1], int(round(x + w))), min(img.shape[0], int(round(y + h)))
        feats.append(stripe_histogram(img[y0:max(y1, y0 + 2), x0:max(x1, x0 + 2)]))
    return np.stack(feats)


def reid_separability(source_dir: str | Path, refined_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Rank-1 / mAP of identity retrieval on source crops, on refined crops, and refined queries against
    source crops (other frames only: the query's own frame is excluded from its gallery)."""
    from vision.metrics.reid import distance_matrix, evaluate

    crops = reid_crops(source_dir, **kw)
    if len(crops) < 2:
        return {"crops": len(crops), "skipped": "fewer than 2 person crops with identities"}
    keys = {k: i for i, k in enumerate(sorted({c["identity"] for c in crops}))}
    ids = np.asarray([keys[c["identity"]] for c in crops])
    frames = np.asarray([c["image_id"] for c in crops])  # same identity, same frame = the query itself
    fs = _describe(Path(source_dir), crops)
    fr = _describe(Path(refined_dir), crops)

    def score(q: np.ndarray, g: np.ndarray) -> dict[str, float]:
        r = evaluate(distance_matrix(q, g), ids, ids, frames, frames, exclude_same_camera=True)
        return {"rank1": round(r["rank1"], 4), "map": round(r["map"], 4), "queries": r["num_valid"]}

    return {"crops": len(crops), "identities": len(keys), "source": score(fs, fs), "refined": score(fr, fr),
            "refined_vs_source": score(fr, fs),
            "own_crop_top1": round(float(np.mean(np.argmin(distance_matrix(fr, fs), 1) == np.arange(len(crops)))), 4)}
