"""Detection records and numpy box utilities.

Conventions used everywhere in the detection data layer:

* A box is ``x1, y1, x2, y2`` in float pixels, top-left origin, continuous coordinates: a box that covers
  the whole ``W x H`` image is ``(0, 0, W, H)``; width is ``x2 - x1`` (no ``+ 1``). This is albumentations'
  ``pascal_voc`` format and COCO's ``[x, y, w, h]`` with ``x2 = x + w``. (Pascal VOC *files* are 1-based
  inclusive; the VOC reader converts, see :mod:`vision.data.detection`.)
* ``label`` is the class name (str); ``identity`` is a track id (MOT) or ``None``.
* ``attrs`` carries per-box extras (visibility, truncation, camera, iscrowd, difficult, amodal_bbox, ...);
  it does not take part in equality/hash, so two boxes are equal when geometry, label and identity are.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: a box may stick out of the image by this many pixels before it counts as outside (annotation noise)
OUTSIDE_TOLERANCE = 0.5


@dataclass(frozen=True)
class Box:
    """One axis-aligned box; see the module docstring for the coordinate convention."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    identity: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)


@dataclass
class DetectionSample:
    """One image with its boxes. ``key`` is stable across machines: ``<source>:<path relative to its root>``."""

    path: str  # absolute path of the image file
    width: int
    height: int
    boxes: list[Box]
    source: str  # dataset / sequence name
    relpath: str  # image path relative to the source root
    meta: dict[str, Any] = field(default_factory=dict)  # frame, camera, sequence, licence, provenance, ...

    @property
    def key(self) -> str:
        return f"{self.source}:{self.relpath}"

    @property
    def root(self) -> str:
        """The source root: ``path`` without its trailing ``relpath``."""
        p, rel = self.path.replace("\\", "/"), self.relpath.replace("\\", "/")
        if rel and p.endswith("/" + rel):
            return self.path[: len(p) - len(rel) - 1] or "/"
        raise ValueError(f"{self.path}: relpath {self.relpath!r} is not a suffix of the path")

    def boxes_array(self) -> np.ndarray:
        return boxes_to_array(self.boxes)

    @property
    def labels(self) -> list[str]:
        return [b.label for b in self.boxes]


def boxes_to_array(boxes: Iterable[Box]) -> np.ndarray:
    """``(N, 4)`` float64 xyxy array (``(0, 4)`` when empty)."""
    arr = np.array([b.xyxy for b in boxes], dtype=np.float64)
    return arr.reshape(-1, 4)


def xywh_to_xyxy(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], axis=1)


def xyxy_to_xywh(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([a[:, :2], a[:, 2:] - a[:, :2]], axis=1)


def box_problem(x1: float, y1: float, x2: float, y2: float, width: float, height: float,
                tol: float = OUTSIDE_TOLERANCE) -> str | None:
    """Why a box is invalid for a ``width x height`` image, or None: non-finite, empty, outside."""
    vals = (x1, y1, x2, y2)
    if not all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) for v in vals):
        return f"box {_fmt_box(vals)} has a non-finite coordinate"
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return f"box {_fmt_box(vals)} has zero or negative size ({x2 - x1:g} x {y2 - y1:g})"
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            return f"box {_fmt_box(vals)} is entirely outside the {width}x{height} image"
        return (f"box {_fmt_box(vals)} extends outside the {width}x{height} image by more than {tol:g} px "
                "(partly outside; clip_outside=True would clip it)")
    return None


def _fmt_box(vals: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, (int, float, np.floating)) else repr(v) for v in vals) + ")"


def validate_boxes(sample: DetectionSample, where: str, labels: Iterable[str] | None = None,
                   tol: float = OUTSIDE_TOLERANCE) -> list[str]:
    """Problems of ``sample``'s boxes, each prefixed with ``where`` (e.g. ``"gt.txt"`` or a file:line).

    Checks: non-finite coordinates, zero/negative width or height, box outside the image by more than
    ``tol`` pixels, and (when ``labels`` is given) labels not in that set. Returns [] when all is well.
    """
    known = set(labels) if labels is not None else None
    problems = []
    for i, b in enumerate(sample.boxes):
        tag = f"{where}: box #{i}" + (f" (id {b.identity})" if b.identity is not None else "")
        p = box_problem(b.x1, b.y1, b.x2, b.y2, sample.width, sample.height, tol)
        if p:
            problems.append(f"{tag}: {p}")
        if known is not None and b.label not in known:
            problems.append(f"{tag}: unknown label {b.label!r} (known: {', '.join(sorted(known))})")
    return problems


def clip_and_filter(boxes: np.ndarray, labels: Sequence[Any] | None, width: float, height: float,
                    min_visibility: float = 0.3, min_size: float = 2.0,
                    original_areas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy ``boxes`` to ``[0, width] x [0, height]`` and drop the ones that became too small or hidden.

    A box is kept when it is finite, its visible fraction (clipped area / area before clipping, or
    / ``original_areas`` when given, e.g. the areas before an augmentation) is at least ``min_visibility``,
    and both clipped sides are at least ``min_size`` pixels. ``labels`` (optional) must have one entry per box.

    Returns ``(kept_indices, clipped_boxes)``: indices into the input (int64, ascending) and the kept
    boxes clipped, ``(K, 4)`` float64. Select labels with ``[labels[i] for i in kept_indices]``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if labels is not None and len(labels) != len(b):
        raise ValueError(f"clip_and_filter: {len(b)} boxes but {len(labels)} labels")
    if original_areas is not None:
        original_areas = np.asarray(original_areas, dtype=np.float64).reshape(-1)
        if len(original_areas) != len(b):
            raise ValueError(f"clip_and_filter: {len(b)} boxes but {len(original_areas)} original areas")
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float64)
    finite = np.isfinite(b).all(axis=1)
    safe = np.where(finite[:, None], b, 0.0)
    area = np.clip(safe[:, 2] - safe[:, 0], 0, None) * np.clip(safe[:, 3] - safe[:, 1], 0, None)
    clipped = np.empty_like(safe)
    clipped[:, [0, 2]] = np.clip(safe[:, [0, 2]], 0.0, float(width))
    clipped[:, [1, 3]] = np.clip(safe[:, [1, 3]], 0.0, float(height))
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    carea = np.clip(cw, 0, None) * np.clip(ch, 0, None)
    ref = area if original_areas is None else original_areas
    with np.errstate(divide="ignore", invalid="ignore"):
        vis = np.where(ref > 0, carea / ref, 0.0)
    keep = finite & (ref > 0) & (vis >= min_visibility) & (cw >= min_size) & (ch >= min_size) & (cw > 0) & (ch > 0)
    idx = np.flatnonzero(keep).astype(np.int64)
    return idx, clipped[idx]
