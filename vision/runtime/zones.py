"""Zone occupancy and line counting for detections over a frame sequence (numpy + pyyaml only).

A small YAML file (pixel coordinates of the source frames)::

    zones: [{name: door, polygon: [[100, 200], [300, 200], [300, 420], [100, 420]]}]
    lines: [{name: entry, points: [[0, 300], [768, 300]]}]
    labels: [person]          # which labels count (default: all)

* occupancy: per zone, the number of objects whose foot point (bottom centre of the box) is inside
  the polygon, in every frame;
* crossings: objects get temporary identities from :class:`IoUTracker`; a crossing is counted when
  the side of the line a track's foot point is on changes sign and the crossing point lies within
  the segment. ``in`` counts crossings from the left to the right of the line as seen walking from
  its first point to its second (in image coordinates, y down: a line drawn left to right has its
  right side below it, so ``in`` is downwards); ``out`` the other way. Counts are cumulative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vision.runtime.detect_decode import box_iou

TOP_KEYS = ("zones", "lines", "labels")
ZONE_KEYS = ("name", "polygon")
LINE_KEYS = ("name", "points")


class ZoneConfigError(ValueError):
    """The zones YAML is unreadable or invalid (the message names the file and the bad entry)."""


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: np.ndarray  # [M, 2] float64 (x, y)


@dataclass(frozen=True)
class Line:
    name: str
    p1: tuple[float, float]
    p2: tuple[float, float]


@dataclass(frozen=True)
class ZoneConfig:
    zones: list[Zone] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    labels: list[str] | None = None  # None: every label counts
    source: str = "<zones>"

    def counts(self, label: str) -> bool:
        return self.labels is None or label in self.labels

    def check_labels(self, known: Sequence[str]) -> None:
        """Refuse labels the model cannot produce (a typo would silently count nothing)."""
        bad = [lab for lab in self.labels or [] if lab not in known]
        if bad:
            raise ZoneConfigError(f"{self.source}: labels {bad} are not labels of the model {list(known)}")


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ZoneConfigError(f"{where}: coordinate {v!r} is not a finite number")
    return float(v)


def _points(raw: Any, where: str) -> np.ndarray:
    if not isinstance(raw, (list, tuple)):
        raise ZoneConfigError(f"{where}: expected a list of [x, y] points, got {raw!r}")
    pts = []
    for i, p in enumerate(raw):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ZoneConfigError(f"{where}: point {i} must be [x, y], got {p!r}")
        pts.append([_number(p[0], f"{where}: point {i}"), _number(p[1], f"{where}: point {i}")])
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _entries(doc: dict, key: str, keys: tuple[str, ...], src: str) -> list[tuple[str, str, dict]]:
    raw = doc.get(key) or []
    if not isinstance(raw, list):
        raise ZoneConfigError(f"{src}: {key!r} must be a list, got {type(raw).__name__}")
    out, seen = [], set()
    for i, e in enumerate(raw):
        where = f"{src}: {key}[{i}]"
        if not isinstance(e, dict):
            raise ZoneConfigError(f"{where}: expected a mapping with keys {list(keys)}, got {e!r}")
        name = e.get("name")
        if name is not None:
            where += f" ({name!r})"
        unknown = sorted(set(e) - set(keys), key=str)
        if unknown:
            raise ZoneConfigError(f"{where}: unknown key(s) {unknown} (allowed: {list(keys)})")
        missing = [k for k in keys if k not in e]
        if missing:
            raise ZoneConfigError(f"{where}: missing key(s) {missing}")
        if not isinstance(name, str) or not name:
            raise ZoneConfigError(f"{where}: name must be a non-empty string, got {name!r}")
        if name in seen:
            raise ZoneConfigError(f"{where}: duplicate {key[:-1]} name {name!r}")
        seen.add(name)
        out.append((where, name, e))
    return out


def parse_zones(doc: Any, source: str = "<zones>") -> ZoneConfig:
    """Validate a parsed zones document (see the module docstring); errors name ``source`` and the entry."""
    if not isinstance(doc, dict):
        raise ZoneConfigError(f"{source}: expected a mapping with keys {list(TOP_KEYS)}, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(TOP_KEYS), key=str)
    if unknown:
        raise ZoneConfigError(f"{source}: unknown key(s) {unknown} (allowed: {list(TOP_KEYS)})")
    zones = []
    for where, name, e in _entries(doc, "zones", ZONE_KEYS, source):
        poly = _points(e["polygon"], where + ": polygon")
        if len(poly) < 3:
            raise ZoneConfigError(f"{where}: polygon needs at least 3 points, got {len(poly)}")
        x, y = poly[:, 0], poly[:, 1]
        if abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) < 1e-9:
            raise ZoneConfigError(f"{where}: polygon has zero area")
        zones.append(Zone(name, poly))
    lines = []
    for where, name, e in _entries(doc, "lines", LINE_KEYS, source):
        pts = _points(e["points"], where + ": points")
        if len(pts) != 2:
            raise ZoneConfigError(f"{where}: a line needs exactly 2 points [[x1, y1], [x2, y2]], got {len(pts)}")
        if np.allclose(pts[0], pts[1]):
            raise ZoneConfigError(f"{where}: the two points of the line coincide")
        lines.append(Line(name, (pts[0, 0], pts[0, 1]), (pts[1, 0], pts[1, 1])))
    labels = doc.get("labels")
    if labels is not None:
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not all(isinstance(v, str) and v for v in labels):
            raise ZoneConfigError(f"{source}: labels must be a list of label names, got {labels!r}")
    if not zones and not lines:
        raise ZoneConfigError(f"{source}: defines no zones and no lines")
    return ZoneConfig(zones, lines, labels, source)


def load_zones(path: str | Path) -> ZoneConfig:
    """Read and validate a zones YAML file (errors name the file and the bad entry)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ZoneConfigError(f"{path}: zones file not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ZoneConfigError(f"{path}: not valid YAML ({e})") from e
    return parse_zones(doc, str(path))


# -- geometry ----------------------------------------------------------------------------------------

def foot_points(boxes: np.ndarray) -> np.ndarray:
    """Bottom centres ``[N, 2]`` of xyxy boxes ``[N, 4]``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3]], axis=1)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of ``points [N, 2]`` lie inside ``polygon [M, 2]`` -> bool ``[N]``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = p[:, 0:1], p[:, 1:2]
    x1, y1 = poly[:, 0][None], poly[:, 1][None]
    x2, y2 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return ((straddles & (x < x_cross)).sum(axis=1) % 2) == 1


def side_of_line(points: np.ndarray, p1, p2) -> np.ndarray:
    """Signed cross product: > 0 right of the directed line p1 -> p2 (image coordinates), < 0 left."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    dx, dy = p2[0] - p1[0], p2[1] - p1[1]
    return dx * (p[:, 1] - p1[1]) - dy * (p[:, 0] - p1[0])


# -- tracking ----------------------------------------------------------------------------------------

class IoUTracker:
    """Greedy IoU association frame to frame: temporary track ids (1, 2, ...) for counting.

    Detections are matched to live tracks in decreasing IoU order (IoU >= ``iou``; same label when
    labels are given); unmatched detections start new tracks; a track unseen for more than
    ``max_age`` frames is dropped.
    """

    def __init__(self, iou: float = 0.3, max_age: int = 10) -> None:
        self.iou, self.max_age = float(iou), int(max_age)
        self.next_id = 1
        self.tracks: dict[int, dict[str, Any]] = {}  # id -> {"box", "label", "age"}

    def update(self, boxes: np.ndarray, labels: Sequence[Any] | None = None) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = list(labels) if labels is not None else [None] * len(boxes)
        ids = np.zeros(len(boxes), dtype=np.int64)
        tids = list(self.tracks)
        matched_t: set[int] = set()
        if tids and len(boxes):
            iou = box_iou(np.stack([self.tracks[t]["box"] for t in tids]), boxes)  # [T, N]
            same = np.array([[self.tracks[t]["label"] == lab for lab in labels] for t in tids])
            iou = np.where(same, iou, 0.0)
            ti, di = np.nonzero(iou >= self.iou)
            for k in np.argsort(-iou[ti, di], kind="stable"):
                t, d = tids[ti[k]], di[k]
                if t in matched_t or ids[d]:
                    continue
                ids[d] = t
                matched_t.add(t)
        for t in tids:
            if t not in matched_t:
                self.tracks[t]["age"] += 1
                if self.tracks[t]["age"] > self.max_age:
                    del self.tracks[t]
        for d in range(len(boxes)):
            if not ids[d]:
                ids[d] = self.next_id
                self.next_id += 1
            self.tracks[int(ids[d])] = {"box": boxes[d], "label": labels[d], "age": 0}
        return ids


class ZoneCounter:
    """Per-frame zone occupancy and cumulative line crossings for one frame sequence."""

    def __init__(self, config: ZoneConfig, tracker: IoUTracker | None = None) -> None:
        self.config = config
        self.tracker = tracker or IoUTracker()
        self.crossings = {ln.name: {"in": 0, "out": 0} for ln in config.lines}
        # per line, per track: (last non-zero side, foot point there)
        self._last: dict[str, dict[int, tuple[float, np.ndarray]]] = {ln.name: {} for ln in config.lines}

    def update(self, detections: list[dict[str, Any]]) -> dict[str, Any]:
        """``detections``: records with ``box`` and ``label``; those of counted labels get a
        ``track_id``. Returns ``{"zones": {name: count}, "lines": {name: {"in", "out"}}}``."""
        counted = [d for d in detections if self.config.counts(d["label"])]
        boxes = np.array([d["box"] for d in counted], dtype=np.float64).reshape(-1, 4)
        ids = self.tracker.update(boxes, [d["label"] for d in counted])
        for d, t in zip(counted, ids):
            d["track_id"] = int(t)
        feet = foot_points(boxes)
        zones = {z.name: int(points_in_polygon(feet, z.polygon).sum()) for z in self.config.zones}
        for ln in self.config.lines:
            p1, p2 = np.asarray(ln.p1), np.asarray(ln.p2)
            seg = p2 - p1
            sides = side_of_line(feet, ln.p1, ln.p2)
            last = self._last[ln.name]
            for t, foot, s in zip(ids, feet, sides):
                t = int(t)
                if s == 0:
                    continue
                prev = last.get(t)
                if prev is not None and np.sign(prev[0]) != np.sign(s):
                    # where the foot's path meets the line, and whether that lies on the segment
                    f = prev[1] + (foot - prev[1]) * (prev[0] / (prev[0] - s))
                    u = float(np.dot(f - p1, seg) / np.dot(seg, seg))
                    if 0.0 <= u <= 1.0:
                        self.crossings[ln.name]["in" if s > 0 else "out"] += 1
                last[t] = (float(s), foot)
            for t in [t for t in last if t not in self.tracker.tracks]:
                del last[t]
        return {"zones": zones, "lines": {k: dict(v) for k, v in self.crossings.items()}}
