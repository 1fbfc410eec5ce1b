"""Privacy masking for the frames the runtime writes: a mosaic over the boxes of chosen labels (numpy only).

    safe = pixelate(rgb, detections)                    # persons only (default)
    safe = pixelate(rgb, [[10, 20, 60, 140]], labels=None)   # plain boxes: all of them

Each box (pixels it touches, clipped to the frame) is split into cells of at least ``block``
pixels per side (by default the box's shorter side / ``cells``, at least ``min_block`` pixels, so
the mosaic scales with the box) and every cell is replaced by its mean colour: no original pixel
value survives inside a box unless the cell was uniform to begin with. Pixels outside the boxes
are untouched; the input array is never modified.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

DEFAULT_LABELS = ("person",)


def _edges(n: int, block: int) -> np.ndarray:
    """Cell boundaries over ``n`` pixels: ``n // block`` cells (at least 1), each >= ``block`` pixels."""
    cells = max(1, n // max(1, block))
    return np.linspace(0, n, cells + 1).round().astype(np.int64)


def _mosaic(region: np.ndarray, block_y: int, block_x: int) -> np.ndarray:
    h, w = region.shape[:2]
    ey, ex = _edges(h, block_y), _edges(w, block_x)
    r = region.astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(r, ey[:-1], axis=0), ex[:-1], axis=1)
    counts = np.outer(np.diff(ey), np.diff(ex)).reshape(len(ey) - 1, len(ex) - 1, *([1] * (r.ndim - 2)))
    means = np.rint(sums / counts).clip(0, 255).astype(region.dtype)
    return np.repeat(np.repeat(means, np.diff(ey), axis=0), np.diff(ex), axis=1)


def _boxes_to_mask(boxes: Any, labels: Sequence[str] | None) -> list[Sequence[float]]:
    out = []
    for b in boxes if not isinstance(boxes, np.ndarray) else boxes.reshape(-1, 4):
        if isinstance(b, dict):  # a detection record {"box", "label", ...}
            if labels is not None and b.get("label") not in labels:
                continue
            b = b["box"]
        out.append(b)
    return out


def pixelate(rgb: np.ndarray, boxes: Iterable[Any], block: int | None = None,
             labels: Sequence[str] | None = DEFAULT_LABELS, cells: int = 8, min_block: int = 4) -> np.ndarray:
    """A copy of ``rgb`` (HxWx3 uint8) with a mosaic over each box.

    ``boxes``: detection records (``{"box": [x1, y1, x2, y2], "label": ...}``: only those whose label
    is in ``labels`` are masked; ``labels=None`` masks all) or plain ``[x1, y1, x2, y2]`` boxes (all
    masked). ``block``: mosaic cell size in pixels; ``None`` scales it to each box
    (``max(min_block, shorter side / cells)``).
    """
    out = np.array(rgb, copy=True)
    h, w = out.shape[:2]
    for b in _boxes_to_mask(boxes, labels):
        x1, y1, x2, y2 = (float(v) for v in b)
        x1, y1 = max(0, math.floor(x1)), max(0, math.floor(y1))
        x2, y2 = min(w, math.ceil(x2)), min(h, math.ceil(y2))
        if x2 <= x1 or y2 <= y1:
            continue
        bs = int(block) if block else max(int(min_block), round(min(x2 - x1, y2 - y1) / max(1, cells)))
        out[y1:y2, x1:x2] = _mosaic(out[y1:y2, x1:x2], bs, bs)
    return out
