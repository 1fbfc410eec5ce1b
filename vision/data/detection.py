"""Detection data: readers and writers for COCO JSON, YOLO txt, Pascal VOC xml and MOT gt.txt, and
box-aware augmentation.

Every reader returns a :class:`DetectionSet` (a ``list`` of :class:`~vision.data.boxes.DetectionSample`
with a report attached) and takes the same keyword arguments:

``policy``
    ``"error"`` (default): check everything first, then raise ONE :class:`~vision.errors.DataError` that
    names every bad file and line / annotation id and the problem. ``"skip"``: drop each bad box (or a bad
    image with all its boxes) and keep going; every dropped item is listed with its reason in
    ``result.skipped`` / ``result.report()`` and, when ``report=PATH`` is given, in a JSON file written
    there. Nothing is ever dropped silently. Problems with the dataset as a whole (a missing folder, an
    unparseable JSON file, a category table with duplicate ids) raise under both policies.
``clip_outside``
    A box partly outside the image is clipped to it; its original box is kept in
    ``attrs["amodal_bbox"]`` as ``[x, y, w, h]`` pixels (``attrs["unclipped_bbox"]`` when the annotation
    already had an ``amodal_bbox``) and the clip is listed in ``result.clipped``. A box *entirely* outside
    the image stays an error. With ``clip_outside=False`` a box sticking out by more than
    ``tol`` (0.5 px) is an error; within the tolerance it is kept as it is.
    Defaults: ``True`` for MOT (MOTChallenge ground truth is amodal by design: people entering or leaving
    the view are annotated with their full extent; TUD-Campus has 19 such boxes, up to 41 % outside,
    PETS S3-MF1 has 4 that overshoot the right edge by < 0.1 px), ``False`` for COCO, YOLO and VOC (those
    formats promise boxes inside the image, so a box outside means a broken file).
``source`` / ``meta``
    ``source`` names the samples (``sample.key = "<source>:<relpath>"``); ``meta`` is merged into every
    sample's ``meta`` (licence, camera, provenance...).

Writers never overwrite anything: the output folder must not exist (``FileExistsError``); it is built in a
temporary sibling and renamed in one step (:func:`vision.utils.io.atomic_directory`). ``images`` chooses
what happens to the image files: ``"copy"`` (default, self-contained output), ``"symlink"`` or ``"none"``
(COCO / VOC only: the annotations reference the images where they are). Numbers are written with
``repr`` precision (and sizes chosen so that ``x + w`` gives back ``x2`` bit for bit), so
read -> write -> read gives identical boxes for COCO, VOC and MOT; YOLO stores normalized centres and
sizes, which round-trip to within ~1e-12 px.

Box convention: see :mod:`vision.data.boxes` (float pixels, ``x2 = x + w``). Pascal VOC *files* use
1-based inclusive integer pixels: a box over pixels ``xmin..xmax`` covers ``[xmin - 1, xmax)`` in continuous
coordinates, so ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` on reading and the inverse on writing
(a whole 200-px-wide image is ``xmin=1, xmax=200`` <-> ``x1=0, x2=200``).
"""
from __future__ import annotations

import configparser
import glob as globmod
import json
import math
import os
import re
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from vision.data.boxes import OUTSIDE_TOLERANCE, Box, DetectionSample, clip_and_filter
from vision.errors import DataError
from vision.runtime.preprocess import IMAGE_EXTENSIONS
from vision.utils.io import atomic_directory, atomic_write_json
POLICIES = ("error", "skip")
IMAGE_MODES = ("copy", "symlink", "none")

#: MOT17/MOT20 ground-truth class ids (column 8 of the 9-column files)
MOT17_CLASSES = {1: "pedestrian", 2: "person_on_vehicle", 3: "car", 4: "bicycle", 5: "motorbike",
                 6: "non_motorized_vehicle", 7: "static_person", 8: "distractor", 9: "occluder",
                 10: "occluder_on_ground", 11: "occluder_full", 12: "reflection", 13: "crowd"}

_COCO_ANN_STANDARD = ("id", "image_id", "category_id", "bbox")
_COCO_IMG_STANDARD = ("id", "file_name", "width", "height")
_VOC_TYPED = {"pose": str, "truncated": int, "difficult": int, "occluded": int}
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


# -- report ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issue:
    """One problem (or one clipped box): where (file[:line] / annotation id), what was affected, why."""

    where: str
    item: str  # box | image | annotation | line | label_file | frame
    code: str  # outside_image, zero_size, non_finite, unknown_category, unknown_label, no_image_entry,
    #            missing_image, unreadable_image, size_mismatch, malformed, class_out_of_range,
    #            coords_out_of_range, label_without_image, missing_annotation, duplicate, clipped
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class DetectionSet(list):
    """The samples a reader produced (a plain ``list`` of DetectionSample) plus what it skipped or clipped."""

    def __init__(self, samples: Iterable[DetectionSample] = (), *, source: str = "", policy: str = "error",
                 skipped: Iterable[Issue] = (), clipped: Iterable[Issue] = (), info: dict[str, Any] | None = None):
        super().__init__(samples)
        self.source = source
        self.policy = policy
        self.skipped: list[Issue] = list(skipped)
        self.clipped: list[Issue] = list(clipped)
        self.info: dict[str, Any] = dict(info or {})

    @property
    def num_boxes(self) -> int:
        return sum(len(s.boxes) for s in self)

    def report(self) -> dict[str, Any]:
        by_code: dict[str, int] = {}
        for i in self.skipped:
            by_code[i.code] = by_code.get(i.code, 0) + 1
        return {"source": self.source, "policy": self.policy, "samples": len(self), "boxes": self.num_boxes,
                "skipped_count": len(self.skipped), "skipped_by_reason": by_code,
                "skipped": [asdict(i) for i in self.skipped],
                "clipped_count": len(self.clipped), "clipped": [asdict(i) for i in self.clipped],
                "info": _jsonable(self.info)}


class _Collector:
    def __init__(self, policy: str, what: str):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.policy, self.what = policy, what
        self.issues: list[Issue] = []
        self.clipped: list[Issue] = []

    def add(self, where: str, item: str, code: str, reason: str) -> None:
        self.issues.append(Issue(str(where), item, code, reason))

    def finish(self, samples: list[DetectionSample], report: str | Path | None, source: str,
               info: dict[str, Any]) -> DetectionSet:
        if self.policy == "error" and self.issues:
            shown = "\n  ".join(str(i) for i in self.issues[:50])
            more = (f"\n  ... and {len(self.issues) - 50} more (policy='skip', report=PATH lists them all)"
                    if len(self.issues) > 50 else "")
            raise DataError(f"{len(self.issues)} problem(s) in {self.what}:\n  {shown}{more}")
        result = DetectionSet(samples, source=source, policy=self.policy, skipped=self.issues,
                              clipped=self.clipped, info=info)
        if report is not None:
            report = Path(report)
            if report.exists():
                raise FileExistsError(f"{report} already exists; refusing to overwrite it (choose another name)")
            atomic_write_json(report, result.report())
        return result


# -- shared helpers -------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serializable: {obj!r}")


def _num(v: float) -> str:
    """Shortest text that parses back to exactly ``v`` (integers without a decimal point)."""
    v = float(v)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _solve(f: Callable[[float], float], target: float, guess: float) -> float:
    """A value ``v`` near ``guess`` with ``f(v) == target`` exactly (``f`` non-decreasing), shortest text first."""
    v = guess
    if f(v) != target:
        up = f(v) < target
        w = v
        for _ in range(256):
            w = math.nextafter(w, math.inf if up else -math.inf)
            fw = f(w)
            if fw == target:
                v = w
                break
            if (fw > target) == up:
                break
    if f(v) != target:
        return guess  # not representable (only for pathological values); best effort
    for digits in range(1, 18):
        c = float(f"{v:.{digits}g}")
        if f(c) == target:
            return c
    return v


def _exact_size(start: float, end: float) -> float:
    """Size ``s`` with ``start + s == end`` in float64 (so ``x, w`` read back as exactly ``x1, x2``)."""
    start, end = float(start), float(end)
    return _solve(lambda s: start + s, end, end - start)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header; raises OSError / UnidentifiedImageError when unreadable."""
    with Image.open(path) as im:
        return int(im.width), int(im.height)


def _check_image(path: Path, expect: tuple[int, int] | None, col: _Collector, where: str,
                 item: str = "image") -> tuple[int, int] | None:
    if not path.is_file():
        col.add(where, item, "missing_image", f"image file {path} not found")
        return None
    try:
        size = _image_size(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        col.add(where, item, "unreadable_image", f"image file {path} is unreadable ({e})")
        return None
    if expect is not None and tuple(expect) != size:
        col.add(where, item, "size_mismatch",
                f"annotation says {expect[0]}x{expect[1]} but image {path} is {size[0]}x{size[1]}")
        return None
    return size


def _make_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int, *, label: str,
              identity: int | None, attrs: dict[str, Any], orig_xywh: Sequence[float], clip_outside: bool,
              tol: float, col: _Collector, where: str) -> Box | None:
    """The checked box, clipped if asked; or None after recording why it is bad."""
    vals = (x1, y1, x2, y2)
    if not all(math.isfinite(v) for v in vals):
        col.add(where, "box", "non_finite", f"box {_fmt(vals)} has a non-finite coordinate")
        return None
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        col.add(where, "box", "zero_size", f"box {_fmt(vals)} has zero or negative size "
                f"({x2 - x1:g} x {y2 - y1:g})")
        return None
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        col.add(where, "box", "outside_image", f"box {_fmt(vals)} is entirely outside the {width}x{height} image")
        return None
    outside = x1 < 0 or y1 < 0 or x2 > width or y2 > height
    if outside and clip_outside:
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        attrs = dict(attrs)
        key = "unclipped_bbox" if "amodal_bbox" in attrs else "amodal_bbox"
        attrs[key] = [float(v) for v in orig_xywh]
        frac = (cx2 - cx1) * (cy2 - cy1) / ((x2 - x1) * (y2 - y1))
        col.clipped.append(Issue(where, "box", "clipped", f"box {_fmt(vals)} clipped to the {width}x{height} "
                                 f"image ({frac:.1%} of it inside); original kept in attrs[{key!r}]"))
        return Box(cx1, cy1, cx2, cy2, label, identity, attrs)
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        col.add(where, "box", "outside_image", f"box {_fmt(vals)} extends outside the {width}x{height} image "
                f"by more than {tol:g} px (partly outside: clip_outside=True clips it)")
        return None
    return Box(float(x1), float(y1), float(x2), float(y2), label, identity, attrs)


def _fmt(vals: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in vals) + ")"


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str))


def _to_float(tok: Any) -> float:
    if isinstance(tok, bool):
        raise ValueError(f"{tok!r} is not a number")  # noqa: TRY004 (callers catch ValueError)
    return float(tok)


def _to_int(tok: Any) -> int:
    """An integer from ``"3"``, ``"3.0"`` or 3; ValueError otherwise."""
    if isinstance(tok, bool):
        raise ValueError(f"{tok!r} is not an integer")  # noqa: TRY004
    if isinstance(tok, int):
        return tok
    v = float(tok)
    if not v.is_integer():
        raise ValueError(f"{tok!r} is not an integer")
    return int(v)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: {what} folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: expected a folder for {what}, found a file")


def _check_images_mode(images: str, allowed: Sequence[str] = IMAGE_MODES) -> None:
    if images not in allowed:
        raise ValueError(f"images must be one of {tuple(allowed)}, got {images!r}")


def _place_image(src: str, dst: Path, images: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if images == "copy":
        shutil.copy2(src, dst)
    elif images == "symlink":
        os.symlink(os.path.abspath(src), dst)


def _check_unique_keys(samples: Sequence[DetectionSample]) -> None:
    seen: dict[str, int] = {}
    dup = []
    for s in samples:
        seen[s.key] = seen.get(s.key, 0) + 1
        if seen[s.key] == 2:
            dup.append(s.key)
    if dup:
        raise DataError(f"{len(dup)} duplicate sample key(s) in the samples to write: {', '.join(dup[:10])}")


def _flat_names(samples: Sequence[DetectionSample]) -> list[str]:
    """Unique file names for flat layouts (YOLO, VOC): base names if unique, else the relpath with '/' -> '__'."""
    _check_unique_keys(samples)
    for make in (lambda s: Path(s.relpath).name,
                 lambda s: s.relpath.replace("\\", "/").replace("/", "__"),
                 lambda s: f"{s.source}__" + s.relpath.replace("\\", "/").replace("/", "__")):
        names = [make(s) for s in samples]
        if len({n.lower() for n in names}) == len(names):
            return names
    raise DataError("cannot give the samples unique flat file names (same source and relpath twice?)")


def _check_writable_boxes(samples: Sequence[DetectionSample], what: str) -> None:
    problems = []
    for s in samples:
        for i, b in enumerate(s.boxes):
            vals = b.xyxy
            if not all(math.isfinite(float(v)) for v in vals) or b.x2 <= b.x1 or b.y2 <= b.y1:
                problems.append(f"{s.key}: box #{i} {_fmt(vals)} is degenerate or non-finite")
    if problems:
        raise DataError(f"{len(problems)} box(es) cannot be written as {what}:\n  " + "\n  ".join(problems[:50]))


# -- COCO -----------------------------------------------------------------------------------------
def read_coco(json_path: str | Path, images_root: str | Path | None = None, source: str | None = None, *,
              policy: str = "error", report: str | Path | None = None, clip_outside: bool = False,
              tol: float = OUTSIDE_TOLERANCE, check_images: bool = True,
              meta: dict[str, Any] | None = None) -> DetectionSet:
    """COCO detection JSON (``bbox = [x, y, w, h]``, pixels) -> samples.

    ``file_name`` is resolved against ``images_root``; when not given, against ``info.images_root`` of
    the file (written by :func:`write_coco` with ``images="none"``), else the JSON file's folder.
    Every annotation key besides id/image_id/category_id/bbox is kept in ``Box.attrs`` (``identity``
    becomes ``Box.identity``; ``camera``, ``visible_fraction``, ``truncation``, ``pixel_height``,
    ``amodal_bbox``... stay as they are; ``iscrowd`` is kept when non-zero and ``area`` when it is not just
    ``w * h``, e.g. a mask area: those defaults are what :func:`write_coco` writes) and every extra image
    key in ``sample.meta``.
    With ``check_images`` each image's header is read: missing files and width/height mismatches are errors.
    The category table is in ``result.info["categories"]``.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DataError(f"{json_path}: COCO annotation file not found")
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{json_path}:{e.lineno}: not valid JSON ({e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: unreadable ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: expected a JSON object with images/annotations/categories")
    for k in ("images", "annotations", "categories"):
        if not isinstance(data.get(k), list):
            raise DataError(f"{json_path}: missing or non-list {k!r} (not a COCO detection file)")
    if images_root is None:
        info_root = (data.get("info") or {}).get("images_root") if isinstance(data.get("info"), dict) else None
        images_root = info_root if info_root else json_path.parent
    root = Path(images_root)
    source = source or json_path.stem
    col = _Collector(policy, f"COCO file {json_path}")

    cats: dict[int, str] = {}
    cat_problems = []
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or isinstance(c.get("id"), bool) or not isinstance(c.get("id"), int) \
                or not isinstance(c.get("name"), str):
            cat_problems.append(f"{json_path}: categories[{k}] needs an integer 'id' and a string 'name', got {c!r}")
        elif c["id"] in cats:
            cat_problems.append(f"{json_path}: categories[{k}]: duplicate category id {c['id']}")
        elif c["name"] in cats.values():
            cat_problems.append(f"{json_path}: categories[{k}]: duplicate category name {c['name']!r}")
        else:
            cats[c["id"]] = c["name"]
    if cat_problems:
        raise DataError(f"{len(cat_problems)} problem(s) in the category table of {json_path}:\n  "
                        + "\n  ".join(cat_problems))

    # images
    entries: dict[int, dict[str, Any]] = {}
    bad_images: dict[Any, int] = {}  # image id -> index of its issue
    order: list[int] = []
    for k, im in enumerate(data["images"]):
        iid = im.get("id") if isinstance(im, dict) else None
        where = f"{json_path}: image id={iid}" + (f" ({im.get('file_name')})" if isinstance(im, dict) else "")
        if not isinstance(im, dict) or isinstance(iid, bool) or not isinstance(iid, int):
            col.add(f"{json_path}: images[{k}]", "image", "malformed", f"image entry needs an integer 'id', got {im!r}")
            continue
        if iid in entries or iid in bad_images:
            col.add(where, "image", "duplicate", f"duplicate image id {iid} (images[{k}])")
            continue
        fn, w, h = im.get("file_name"), im.get("width"), im.get("height")
        if not isinstance(fn, str) or not fn:
            col.add(where, "image", "malformed", "image entry has no 'file_name'")
            bad_images[iid] = len(col.issues) - 1
            continue
        try:
            w, h = _to_int(w), _to_int(h)
            if w <= 0 or h <= 0:
                raise ValueError
        except (TypeError, ValueError):
            col.add(where, "image", "malformed", f"width/height must be positive integers, got {im.get('width')!r}"
                    f" x {im.get('height')!r}")
            bad_images[iid] = len(col.issues) - 1
            continue
        path = root / fn
        if check_images:
            if _check_image(path, (w, h), col, where) is None:
                bad_images[iid] = len(col.issues) - 1
                continue
        elif not path.is_file():
            col.add(where, "image", "missing_image", f"image file {path} not found")
            bad_images[iid] = len(col.issues) - 1
            continue
        entries[iid] = {"file_name": fn, "width": w, "height": h, "path": path,
                        "meta": {kk: v for kk, v in im.items() if kk not in _COCO_IMG_STANDARD}, "boxes": []}
        order.append(iid)

    # annotations
    seen_ann: set[Any] = set()
    dropped_with_image: dict[Any, int] = {}
    for k, a in enumerate(data["annotations"]):
        aid = a.get("id") if isinstance(a, dict) else None
        where = f"{json_path}: annotation id={aid}" + (f" (image_id={a.get('image_id')})" if isinstance(a, dict) else "")
        if not isinstance(a, dict):
            col.add(f"{json_path}: annotations[{k}]", "annotation", "malformed", f"annotation is not an object: {a!r}")
            continue
        if not all(_scalar(a.get(k)) for k in ("id", "image_id", "category_id")):
            col.add(where, "annotation", "malformed", "id, image_id and category_id must be integers")
            continue
        if aid is not None and aid in seen_ann:
            col.add(where, "annotation", "duplicate", f"duplicate annotation id {aid} (annotations[{k}])")
            continue
        seen_ann.add(aid)
        iid = a.get("image_id")
        if iid in bad_images:
            dropped_with_image[iid] = dropped_with_image.get(iid, 0) + 1
            continue
        if iid not in entries:
            col.add(where, "annotation", "no_image_entry", f"image_id {iid!r} has no entry in 'images'")
            continue
        cid = a.get("category_id")
        if isinstance(cid, bool) or cid not in cats:
            col.add(where, "annotation", "unknown_category",
                    f"unknown category_id {cid!r} (known: {sorted(cats)})")
            continue
        bb = a.get("bbox")
        try:
            if not isinstance(bb, (list, tuple)) or len(bb) != 4:
                raise ValueError
            x, y, w, h = (_to_float(v) for v in bb)
        except (TypeError, ValueError):
            col.add(where, "annotation", "malformed", f"bbox must be [x, y, w, h] numbers, got {bb!r}")
            continue
        ident = a.get("identity")
        if ident is not None and (isinstance(ident, bool) or not isinstance(ident, int)):
            col.add(where, "annotation", "malformed", f"identity must be an integer or null, got {ident!r}")
            continue
        attrs = {kk: v for kk, v in a.items() if kk not in _COCO_ANN_STANDARD and kk != "identity"}
        # COCO defaults are not carried: iscrowd 0, and an area that is just w * h (write_coco writes them)
        if attrs.get("iscrowd", None) == 0 and not isinstance(attrs["iscrowd"], bool):
            del attrs["iscrowd"]
        area = attrs.get("area")
        if isinstance(area, (int, float)) and not isinstance(area, bool) and math.isclose(area, w * h, rel_tol=1e-9):
            del attrs["area"]
        e = entries[iid]
        box = _make_box(x, y, x + w, y + h, e["width"], e["height"], label=cats[cid], identity=ident,
                        attrs=attrs, orig_xywh=(x, y, w, h), clip_outside=clip_outside, tol=tol, col=col,
                        where=where + f" in {e['file_name']}")
        if box is not None:
            e["boxes"].append(box)
    for iid, n in dropped_with_image.items():
        i = bad_images[iid]
        issue = col.issues[i]
        col.issues[i] = Issue(issue.where, issue.item, issue.code, issue.reason + f" ({n} annotation(s) with it)")

    samples = []
    for iid in order:
        e = entries[iid]
        m = {**e["meta"], **(meta or {})}
        samples.append(DetectionSample(os.path.abspath(e["path"]), e["width"], e["height"], e["boxes"], source,
                                       e["file_name"], m))
    info = {"format": "coco", "file": str(json_path), "images_root": str(root),
            "categories": [{"id": i, "name": n} for i, n in cats.items()]}
    return col.finish(samples, report, source, info)


def write_coco(samples: Sequence[DetectionSample], out_dir: str | Path, categories: Sequence[str | dict[str, Any]],
               *, images: str = "copy", filename: str = "annotations.json",
               info: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/<filename>`` (COCO detection JSON); returns its path.

    ``categories``: class names (ids 1..N in that order) or COCO category dicts (``id``, ``name``, ...).
    ``images="copy"``/``"symlink"`` put the images under ``out_dir/images/<source>/<relpath>``;
    ``"none"`` keeps ``file_name = relpath`` and records the samples' common root in ``info.images_root``
    (all samples must share one root). Box attrs are written as annotation fields (``area`` defaults to
    ``w * h``, ``iscrowd`` to 0), ``identity`` when not None, sample meta as image fields.
    """
    _check_images_mode(images)
    cat_list: list[dict[str, Any]] = []
    for k, c in enumerate(categories):
        cat_list.append({"id": k + 1, "name": c, "supercategory": c} if isinstance(c, str) else dict(c))
    name_to_id = {c["name"]: c["id"] for c in cat_list}
    if len(name_to_id) != len(cat_list) or len({c["id"] for c in cat_list}) != len(cat_list):
        raise DataError(f"write_coco: duplicate category names or ids in {categories!r}")
    _check_unique_keys(samples)
    _check_writable_boxes(samples, "COCO")
    unknown = sorted({b.label for s in samples for b in s.boxes} - set(name_to_id))
    if unknown:
        raise DataError(f"write_coco: label(s) {unknown} are not in the categories {list(name_to_id)}")
    roots = set()
    if images == "none":
        try:
            roots = {s.root for s in samples}
        except ValueError as e:
            raise DataError(f"write_coco: {e}") from e
        if len(roots) > 1:
            raise DataError(f"write_coco: images='none' needs all samples under one root, got {sorted(roots)}; "
                            "use images='copy' or 'symlink'")
    out_dir = Path(out_dir)
    img_entries, anns = [], []
    for k, s in enumerate(samples):
        fn = s.relpath if images == "none" else f"images/{s.source}/{s.relpath}"
        try:
            extra = _jsonable({kk: v for kk, v in s.meta.items() if kk not in _COCO_IMG_STANDARD})
        except TypeError as e:
            raise DataError(f"write_coco: {s.key}: meta {e}") from e
        img_entries.append({"id": k + 1, "file_name": fn, "width": int(s.width), "height": int(s.height), **extra})
        for b in s.boxes:
            x, y = float(b.x1), float(b.y1)
            w, h = _exact_size(b.x1, b.x2), _exact_size(b.y1, b.y2)
            try:
                attrs = _jsonable(b.attrs)
            except TypeError as e:
                raise DataError(f"write_coco: {s.key}: box attrs {e}") from e
            ann = {"id": len(anns) + 1, "image_id": k + 1, "category_id": name_to_id[b.label], "bbox": [x, y, w, h],
                   "area": w * h, "iscrowd": 0}
            if b.identity is not None:
                ann["identity"] = int(b.identity)
            ann.update({kk: v for kk, v in attrs.items() if kk not in _COCO_ANN_STANDARD and kk != "identity"})
            anns.append(ann)
    info_out = dict(info or {})
    if images == "none" and roots:
        info_out["images_root"] = next(iter(roots))
    doc = {"info": info_out, "images": img_entries, "annotations": anns, "categories": cat_list}
    with atomic_directory(out_dir) as tmp:
        if images != "none":
            for s, e in zip(samples, img_entries):
                _place_image(s.path, tmp / e["file_name"], images)
        (tmp / filename).write_text(json.dumps(doc, indent=1) + "\n")
    return out_dir / filename


# -- YOLO -----------------------------------------------------------------------------------------
def read_yolo(root: str | Path, classes: Sequence[str], source: str | None = None, *, policy: str = "error",
              report: str | Path | None = None, clip_outside: bool = False, tol: float = OUTSIDE_TOLERANCE,
              meta: dict[str, Any] | None = None) -> DetectionSet:
    """YOLO layout: ``root/images/**/<name>.<ext>`` with ``root/labels/**/<name>.txt``.

    Each label line is ``cls cx cy w h`` (class index into ``classes``; centre and size normalized by the
    image width/height). An image without a label file has no boxes (an explicitly empty sample,
    ``meta["label_file"] = None``); a label file without an image is an error. Coordinates may leave
    ``[0, 1]`` by ``tol`` pixels at most (unless ``clip_outside``).
    """
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    _require_dir(images_dir, "YOLO images")
    _require_dir(labels_dir, "YOLO labels")
    classes = list(classes)
    if not classes:
        raise DataError(f"{root}: read_yolo needs the class names (classes=[...])")
    source = source or root.name
    col = _Collector(policy, f"YOLO dataset {root}")
    imgs = _list_images(images_dir)
    stems = {p.relative_to(images_dir).with_suffix("").as_posix(): p for p in imgs}
    if len(stems) != len(imgs):
        raise DataError(f"{images_dir}: two images share a name with different extensions; labels would be ambiguous")
    for lf in sorted(labels_dir.rglob("*.txt")):
        rel = lf.relative_to(labels_dir).with_suffix("").as_posix()
        if rel not in stems:
            col.add(str(lf), "label_file", "label_without_image",
                    f"label file has no image {images_dir / rel}.* ({', '.join(IMAGE_EXTENSIONS)})")
    samples = []
    for rel, p in sorted(stems.items()):
        size = _check_image(p, None, col, str(p))
        if size is None:
            continue
        W, H = size
        lf = labels_dir / f"{rel}.txt"
        boxes: list[Box] = []
        if lf.is_file():
            try:
                lines = lf.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                col.add(str(lf), "label_file", "malformed", f"unreadable label file ({e})")
                continue
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{lf}:{lineno}"
                toks = line.split()
                if len(toks) != 5:
                    col.add(where, "line", "malformed", f"expected 5 values 'cls cx cy w h', got {len(toks)}: {line!r}")
                    continue
                try:
                    c = _to_int(toks[0])
                    cx, cy, w, h = (float(t) for t in toks[1:])
                except ValueError:
                    col.add(where, "line", "malformed", f"not numbers (cls must be an integer): {line!r}")
                    continue
                if not 0 <= c < len(classes):
                    col.add(where, "line", "class_out_of_range",
                            f"class index {c} out of range (0..{len(classes) - 1}, {len(classes)} classes)")
                    continue
                x1, x2 = (cx - w / 2) * W, (cx + w / 2) * W
                y1, y2 = (cy - h / 2) * H, (cy + h / 2) * H
                if not clip_outside and all(math.isfinite(v) for v in (cx, cy, w, h)) and w > 0 and h > 0:
                    tx, ty = tol / W, tol / H
                    if cx - w / 2 < -tx or cy - h / 2 < -ty or cx + w / 2 > 1 + tx or cy + h / 2 > 1 + ty:
                        col.add(where, "box", "coords_out_of_range",
                                f"box cx={cx:g} cy={cy:g} w={w:g} h={h:g} leaves [0, 1] by more than {tol:g} px "
                                f"of the {W}x{H} image")
                        continue
                box = _make_box(x1, y1, x2, y2, W, H, label=classes[c], identity=None, attrs={},
                                orig_xywh=(x1, y1, x2 - x1, y2 - y1), clip_outside=clip_outside, tol=tol,
                                col=col, where=where)
                if box is not None:
                    boxes.append(box)
            label_rel: str | None = lf.relative_to(root).as_posix()
        else:
            label_rel = None
        m = {"label_file": label_rel, **(meta or {})}
        samples.append(DetectionSample(os.path.abspath(p), W, H, boxes, source, p.relative_to(root).as_posix(), m))
    info = {"format": "yolo", "root": str(root), "classes": classes,
            "images_without_labels": sum(s.meta["label_file"] is None for s in samples)}
    return col.finish(samples, report, source, info)


def write_yolo(samples: Sequence[DetectionSample], out_dir: str | Path, classes: Sequence[str], *,
               images: str = "copy") -> Path:
    """Write ``out_dir/images/<name>``, ``out_dir/labels/<stem>.txt`` (one per image, empty when it has no
    boxes) and ``out_dir/classes.txt``; returns ``out_dir``. Values are written with 17 significant digits."""
    _check_images_mode(images, ("copy", "symlink"))
    classes = list(classes)
    idx = {c: i for i, c in enumerate(classes)}
    if len(idx) != len(classes):
        raise DataError(f"write_yolo: duplicate class names in {classes}")
    _check_writable_boxes(samples, "YOLO")
    unknown = sorted({b.label for s in samples for b in s.boxes} - set(idx))
    if unknown:
        raise DataError(f"write_yolo: label(s) {unknown} are not in the classes {classes}")
    names = _flat_names(samples)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for s, name in zip(samples, names):
            _place_image(s.path, tmp / "images" / name, images)
            W, H = float(s.width), float(s.height)
            lines = []
            for b in s.boxes:
                vals = ((b.x1 + b.x2) / 2 / W, (b.y1 + b.y2) / 2 / H, (b.x2 - b.x1) / W, (b.y2 - b.y1) / H)
                lines.append(" ".join([str(idx[b.label])] + [repr(float(v)) for v in vals]))
            (tmp / "labels" / f"{Path(name).stem}.txt").write_text("".join(line + "\n" for line in lines))
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes))
    return out_dir


# -- Pascal VOC -----------------------------------------------------------------------------------
def read_voc(images_dir: str | Path, annotations_dir: str | Path, source: str | None = None, *,
             labels: Iterable[str] | None = None, policy: str = "error", report: str | Path | None = None,
             clip_outside: bool = False, tol: float = OUTSIDE_TOLERANCE, missing_annotation: str = "error",
             meta: dict[str, Any] | None = None) -> DetectionSet:
    """Pascal VOC: one ``annotations_dir/<stem>.xml`` per image in ``images_dir`` (``<filename>`` names it).

    Coordinates: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (VOC is 1-based inclusive).
    ``<difficult>``, ``<truncated>``, ``<occluded>`` (ints) and ``<pose>`` go to ``Box.attrs``, as do other
    simple text children of ``<object>`` (strings); ``<folder>``, ``<source><database>``, ``<size><depth>``
    and ``<segmented>`` go to ``sample.meta`` (``voc_folder``, ``voc_database``, ``depth``, ``segmented``).
    ``labels``: the known class names (others are errors). Images without an xml file:
    ``missing_annotation="error"`` (default), ``"empty"`` (a sample with no boxes) or ``"ignore"`` (not part
    of the set; counted in ``result.info["images_without_annotation"]``).
    """
    if missing_annotation not in ("error", "empty", "ignore"):
        raise ValueError(f"missing_annotation must be error, empty or ignore, got {missing_annotation!r}")
    images_dir, annotations_dir = Path(images_dir), Path(annotations_dir)
    _require_dir(images_dir, "VOC images")
    _require_dir(annotations_dir, "VOC annotations")
    known = set(labels) if labels is not None else None
    source = source or images_dir.parent.name or images_dir.name
    col = _Collector(policy, f"VOC annotations {annotations_dir}")
    samples = []
    used_images: set[Path] = set()
    for xml in sorted(annotations_dir.glob("*.xml")):
        where = str(xml)
        try:
            root = ET.parse(xml).getroot()
        except (ET.ParseError, OSError) as e:
            col.add(where, "image", "malformed", f"unreadable VOC xml ({e})")
            continue
        fn = (root.findtext("filename") or "").strip()
        img = images_dir / fn if fn else None
        if img is None or not img.is_file():
            alts = [images_dir / (xml.stem + ext) for ext in IMAGE_EXTENSIONS]
            alt = next((a for a in alts if a.is_file()), None)
            if alt is None:
                col.add(where, "image", "missing_image", f"image {images_dir / (fn or xml.stem + '.*')} not found")
                continue
            img = alt
        used_images.add(img.resolve())
        size = root.find("size")
        try:
            w = _to_int((size.findtext("width") or "").strip())  # type: ignore[union-attr]
            h = _to_int((size.findtext("height") or "").strip())  # type: ignore[union-attr]
            if w <= 0 or h <= 0:
                raise ValueError
        except (AttributeError, TypeError, ValueError):
            col.add(where, "image", "malformed", "<size> width/height missing or not positive integers")
            continue
        if _check_image(img, (w, h), col, where) is None:
            continue
        m: dict[str, Any] = {}
        for key, path in (("voc_folder", "folder"), ("voc_database", "source/database"), ("depth", "size/depth"),
                          ("segmented", "segmented")):
            el = root.find(path)
            if el is not None:
                txt = (el.text or "").strip()
                m[key] = int(txt) if key in ("depth", "segmented") and re.fullmatch(r"-?\d+", txt) else txt
        boxes = []
        for n, obj in enumerate(root.iter("object"), 1):
            owhere = f"{xml}: object #{n}"
            name = (obj.findtext("name") or "").strip()
            if not name:
                col.add(owhere, "box", "malformed", "<object> has no <name>")
                continue
            if known is not None and name not in known:
                col.add(owhere, "box", "unknown_label", f"unknown label {name!r} (known: {', '.join(sorted(known))})")
                continue
            bb = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float((bb.findtext(k) or "").strip())  # type: ignore[union-attr]
                                          for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                col.add(owhere, "box", "malformed", "missing or non-numeric <bndbox> xmin/ymin/xmax/ymax")
                continue
            attrs: dict[str, Any] = {}
            bad = None
            for child in obj:
                if child.tag in ("name", "bndbox", "part") or len(child):
                    continue
                txt = (child.text or "").strip()
                if child.tag in _VOC_TYPED and _VOC_TYPED[child.tag] is int:
                    try:
                        attrs[child.tag] = _to_int(txt)
                    except ValueError:
                        bad = f"<{child.tag}> must be an integer, got {txt!r}"
                else:
                    attrs[child.tag] = txt
            if bad:
                col.add(owhere, "box", "malformed", bad)
                continue
            x1, y1 = xmin - 1, ymin - 1
            box = _make_box(x1, y1, xmax, ymax, w, h, label=name, identity=None, attrs=attrs,
                            orig_xywh=(x1, y1, xmax - x1, ymax - y1), clip_outside=clip_outside, tol=tol,
                            col=col, where=owhere)
            if box is not None:
                boxes.append(box)
        m["annotation_file"] = xml.name
        m.update(meta or {})
        samples.append(DetectionSample(os.path.abspath(img), w, h, boxes, source,
                                       img.relative_to(images_dir).as_posix(), m))
    without = [p for p in _list_images(images_dir) if p.resolve() not in used_images]
    if missing_annotation == "error":
        for p in without:
            col.add(str(p), "image", "missing_annotation",
                    f"image has no annotation file {annotations_dir / (p.stem + '.xml')} "
                    "(missing_annotation='empty' or 'ignore' to accept)")
    elif missing_annotation == "empty":
        for p in without:
            size = _check_image(p, None, col, str(p))
            if size is not None:
                samples.append(DetectionSample(os.path.abspath(p), size[0], size[1], [], source,
                                               p.relative_to(images_dir).as_posix(),
                                               {"annotation_file": None, **(meta or {})}))
    samples.sort(key=lambda s: s.relpath)
    info = {"format": "voc", "images_dir": str(images_dir), "annotations_dir": str(annotations_dir),
            "images_without_annotation": len(without)}
    return col.finish(samples, report, source, info)


def write_voc(samples: Sequence[DetectionSample], out_dir: str | Path, *, images: str = "copy") -> Path:
    """Write ``out_dir/annotations/<stem>.xml`` (+ ``out_dir/images/<name>`` unless ``images="none"``, in
    which case ``<filename>`` is the image's own base name); returns ``out_dir``.
    ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2`` (integers written without a decimal point).
    Box attrs written: pose, truncated, difficult (default 0), occluded, and other string-valued attrs."""
    _check_images_mode(images)
    _check_writable_boxes(samples, "VOC")
    names = _flat_names(samples)
    if images == "none":
        base = [Path(s.path).name for s in samples]
        if names != base:
            raise DataError("write_voc: images='none' needs unique image base names; use images='copy' or 'symlink'")
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        (tmp / "annotations").mkdir()
        for s, name in zip(samples, names):
            if images != "none":
                _place_image(s.path, tmp / "images" / name, images)
            ann = ET.Element("annotation")
            if "voc_folder" in s.meta:
                ET.SubElement(ann, "folder").text = str(s.meta["voc_folder"])
            ET.SubElement(ann, "filename").text = name
            if "voc_database" in s.meta:
                ET.SubElement(ET.SubElement(ann, "source"), "database").text = str(s.meta["voc_database"])
            size = ET.SubElement(ann, "size")
            ET.SubElement(size, "width").text = str(int(s.width))
            ET.SubElement(size, "height").text = str(int(s.height))
            ET.SubElement(size, "depth").text = str(s.meta.get("depth", 3))
            ET.SubElement(ann, "segmented").text = str(s.meta.get("segmented", 0))
            for b in s.boxes:
                obj = ET.SubElement(ann, "object")
                ET.SubElement(obj, "name").text = b.label
                attrs = dict(b.attrs)
                attrs.setdefault("difficult", 0)
                for key in ("pose", "truncated", "difficult", "occluded"):
                    if key in attrs:
                        ET.SubElement(obj, key).text = str(attrs[key])
                for key, v in attrs.items():
                    if key not in _VOC_TYPED and isinstance(v, str) and _XML_NAME.match(key) \
                            and key not in ("name", "bndbox", "part"):
                        ET.SubElement(obj, key).text = v
                bb = ET.SubElement(obj, "bndbox")
                xmin = _solve(lambda v: v - 1, float(b.x1), float(b.x1) + 1)
                ymin = _solve(lambda v: v - 1, float(b.y1), float(b.y1) + 1)
                for key, v in (("xmin", xmin), ("ymin", ymin), ("xmax", b.x2), ("ymax", b.y2)):
                    ET.SubElement(bb, key).text = _num(v)
            ET.indent(ann, space="\t")
            (tmp / "annotations" / f"{Path(name).stem}.xml").write_bytes(ET.tostring(ann, encoding="utf-8") + b"\n")
    return out_dir


# -- MOT ------------------------------------------------------------------------------------------
def _frame_number(p: Path) -> int | None:
    digits = re.findall(r"\d+", p.stem)
    return int(digits[-1]) if digits else None


def _seqinfo(seq_dir: Path) -> dict[str, str]:
    ini = seq_dir / "seqinfo.ini"
    if not ini.is_file():
        return {}
    cp = configparser.ConfigParser()
    try:
        cp.read(ini)
    except configparser.Error as e:
        raise DataError(f"{ini}: unreadable seqinfo.ini ({e})") from e
    return dict(cp["Sequence"]) if cp.has_section("Sequence") else {}


def read_mot(seq_dir: str | Path, frames_glob: str | None = None, source: str | None = None, *,
             gt: str = "gt/gt.txt", label: str = "person", class_names: dict[int, str] | None = None,
             policy: str = "error", report: str | Path | None = None, clip_outside: bool = True,
             tol: float = OUTSIDE_TOLERANCE, check_images: bool = True,
             meta: dict[str, Any] | None = None) -> DetectionSet:
    """A MOTChallenge-style sequence: frame images + ``gt/gt.txt`` (comma-separated, one box per line).

    Column variants (all lines of a file must agree):

    * 7: ``frame, id, left, top, width, height, conf`` (MOT15 / TUD-Campus); ``attrs["conf"]``
    * 9: ``frame, id, left, top, width, height, conf, class, visibility`` (MOT17/20 gt); label from
      ``class_names`` (default :data:`MOT17_CLASSES`), ``attrs["conf"]``, ``["class_id"]``, ``["visibility"]``
    * 10: ``frame, id, left, top, width, height, conf, x, y, z`` (MOT15/16 with world coordinates, PETS);
      ``attrs["conf"]``, ``["world_x"]``, ``["world_y"]``, ``["world_z"]``

    7/10-column files carry no class: every box gets ``label``. ``id = -1`` means no identity (None).
    ``frames_glob`` (relative to ``seq_dir`` or absolute) finds the frames; by default ``seqinfo.ini``'s
    ``imDir``/``imExt`` when present, else ``img1/*`` or ``img/*``. The frame number is the last number in
    the file name. Every frame becomes a sample (empty if gt has no line for it); ``meta`` has ``frame``,
    ``sequence``, ``mot_columns``. A gt frame without an image, a malformed line, a duplicate
    (frame, id) pair and a box outside the frame are errors (partly outside: clipped by default, see the
    module docstring).
    """
    seq_dir = Path(seq_dir)
    _require_dir(seq_dir, "MOT sequence")
    info_ini = _seqinfo(seq_dir)
    if frames_glob is None:
        if info_ini.get("imdir"):
            frames_glob = f"{info_ini['imdir']}/*{info_ini.get('imext', '')}"
        else:
            frames_glob = next((f"{d}/*" for d in ("img1", "img") if (seq_dir / d).is_dir()), None)
            if frames_glob is None:
                raise DataError(f"{seq_dir}: no frame folder (img1/ or img/) and no seqinfo.ini; pass frames_glob")
    frame_files = sorted(Path(p) for p in globmod.glob(os.path.join(str(seq_dir), frames_glob))
                         if Path(p).suffix.lower() in IMAGE_EXTENSIONS and Path(p).is_file())
    if not frame_files:
        raise DataError(f"{seq_dir}: no frame images match {frames_glob!r}")
    gt_path = seq_dir / gt
    if not gt_path.is_file():
        raise DataError(f"{gt_path}: MOT ground-truth file not found")
    sequence = info_ini.get("name") or seq_dir.name
    source = source or sequence
    classes = dict(class_names if class_names is not None else MOT17_CLASSES)
    col = _Collector(policy, f"MOT sequence {seq_dir}")

    frames: dict[int, Path] = {}
    for p in frame_files:
        n = _frame_number(p)
        if n is None:
            col.add(str(p), "frame", "malformed", "frame file name has no frame number")
        elif n in frames:
            col.add(str(p), "frame", "duplicate", f"frame number {n} also used by {frames[n].name}")
        else:
            frames[n] = p
    sizes: dict[int, tuple[int, int] | None] = {}
    first_size = None
    for n, p in sorted(frames.items()):
        if check_images or first_size is None:
            sizes[n] = _check_image(p, None, col, str(p), item="frame")
            if first_size is None:
                first_size = sizes[n]
        else:
            sizes[n] = first_size

    try:
        lines = gt_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{gt_path}: unreadable ({e})") from e
    ncols = None
    boxes: dict[int, list[Box]] = {n: [] for n in frames}
    seen: dict[tuple[int, int], int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{gt_path}:{lineno}"
        toks = [t.strip() for t in line.split(",")]
        if ncols is None:
            if len(toks) not in (7, 9, 10):
                raise DataError(f"{where}: {len(toks)} columns; MOT gt needs 7, 9 or 10 comma-separated columns")
            ncols = len(toks)
        if len(toks) != ncols:
            col.add(where, "line", "malformed", f"{len(toks)} columns, the file has {ncols}: {line!r}")
            continue
        try:
            frame, ident = _to_int(toks[0]), _to_int(toks[1])
            left, top, w, h, conf = (float(t) for t in toks[2:7])
            rest = [float(t) for t in toks[7:]]
        except ValueError:
            col.add(where, "line", "malformed", f"not numbers (frame and id must be integers): {line!r}")
            continue
        attrs: dict[str, Any] = {"conf": conf}
        lab = label
        if ncols == 9:
            try:
                cid = _to_int(rest[0])
            except ValueError:
                col.add(where, "line", "malformed", f"class column must be an integer: {line!r}")
                continue
            if cid not in classes:
                col.add(where, "line", "class_out_of_range", f"unknown class id {cid} (known: {sorted(classes)})")
                continue
            lab = classes[cid]
            attrs.update(class_id=cid, visibility=rest[1])
        elif ncols == 10:
            attrs.update(world_x=rest[0], world_y=rest[1], world_z=rest[2])
        if frame not in frames:
            col.add(where, "line", "missing_image", f"frame {frame} has no image matching {seq_dir / frames_glob}")
            continue
        if sizes.get(frame) is None:
            continue  # unreadable frame image: already reported
        key = (frame, ident)
        if ident != -1 and key in seen:
            col.add(where, "line", "duplicate", f"frame {frame} id {ident} already on line {seen[key]}")
            continue
        seen[key] = lineno
        W, H = sizes[frame]  # type: ignore[misc]
        box = _make_box(left, top, left + w, top + h, W, H, label=lab, identity=None if ident == -1 else ident,
                        attrs=attrs, orig_xywh=(left, top, w, h), clip_outside=clip_outside, tol=tol, col=col,
                        where=where)
        if box is not None:
            boxes[frame].append(box)
    if ncols is None:
        ncols = 7
    samples = []
    for n, p in sorted(frames.items()):
        if sizes[n] is None:
            continue
        W, H = sizes[n]  # type: ignore[misc]
        m = {"frame": n, "sequence": sequence, "mot_columns": ncols, **(meta or {})}
        samples.append(DetectionSample(os.path.abspath(p), W, H, boxes[n], source,
                                       os.path.relpath(os.path.abspath(p), os.path.abspath(seq_dir)).replace(os.sep, "/"), m))
    ids = {b.identity for s in samples for b in s.boxes if b.identity is not None}
    info = {"format": "mot", "seq_dir": str(seq_dir), "gt": str(gt_path), "columns": ncols,
            "frames": len(samples), "identities": len(ids),
            "frames_without_boxes": sum(not s.boxes for s in samples)}
    return col.finish(samples, report, source, info)


def write_mot(samples: Sequence[DetectionSample], seq_dir: str | Path, *, columns: int | None = None,
              images: str = "copy", im_dir: str = "img1",
              class_names: dict[int, str] | None = None) -> Path:
    """Write a MOTChallenge sequence: ``seq_dir/gt/gt.txt``, ``seq_dir/<im_dir>/<frame:06d>.<ext>`` and
    ``seq_dir/seqinfo.ini``; returns ``seq_dir``.

    Frame numbers come from ``meta["frame"]`` (else 1..N in order). ``columns``: 7, 9 or 10; by default
    the samples' ``meta["mot_columns"]``, else 9 when boxes carry ``visibility``/``class_id``, 10 when they
    carry ``world_x``, else 7. A box clipped on reading is written with its original (amodal) extent from
    ``attrs["amodal_bbox"]``, so reading it back gives the same clipped box. Identity None is written as -1.
    """
    _check_images_mode(images, ("copy", "symlink"))
    _check_writable_boxes(samples, "MOT")
    if not samples:
        raise DataError("write_mot: no samples to write")
    classes = dict(class_names if class_names is not None else MOT17_CLASSES)
    class_ids = {v: k for k, v in classes.items()}
    all_boxes = [b for s in samples for b in s.boxes]
    if columns is None:
        metas = {s.meta.get("mot_columns") for s in samples}
        if len(metas) == 1 and next(iter(metas)) in (7, 9, 10):
            columns = next(iter(metas))
        elif any("visibility" in b.attrs or "class_id" in b.attrs for b in all_boxes):
            columns = 9
        elif any("world_x" in b.attrs for b in all_boxes):
            columns = 10
        else:
            columns = 7
    if columns not in (7, 9, 10):
        raise ValueError(f"columns must be 7, 9 or 10, got {columns!r}")
    labels = {b.label for b in all_boxes}
    if columns != 9 and len(labels) > 1:
        raise DataError(f"write_mot: {columns}-column MOT files carry no class but the boxes have labels "
                        f"{sorted(labels)}; use columns=9")
    frames = [s.meta.get("frame") for s in samples]
    if not all(isinstance(f, (int, np.integer)) and not isinstance(f, bool) and f >= 0 for f in frames) \
            or len(set(frames)) != len(frames):
        frames = list(range(1, len(samples) + 1))
    problems = []
    rows: list[tuple[int, int, str]] = []
    for s, f in zip(samples, frames):
        for i, b in enumerate(s.boxes):
            ident = -1 if b.identity is None else int(b.identity)
            am = b.attrs.get("amodal_bbox")
            left, top = float(b.x1), float(b.y1)
            w, h = _exact_size(b.x1, b.x2), _exact_size(b.y1, b.y2)
            if isinstance(am, (list, tuple)) and len(am) == 4:
                ax, ay, aw, ah = (float(v) for v in am)
                clipped = (max(ax, 0.0), max(ay, 0.0), min(ax + aw, float(s.width)), min(ay + ah, float(s.height)))
                if clipped == (b.x1, b.y1, b.x2, b.y2):
                    left, top, w, h = ax, ay, aw, ah
            vals = [f, ident, left, top, w, h, b.attrs.get("conf", -1 if columns != 9 else 1)]
            if columns == 9:
                cid = b.attrs.get("class_id", class_ids.get(b.label))
                if cid is None:
                    problems.append(f"{s.key}: box #{i}: label {b.label!r} has no MOT class id ({classes})")
                    continue
                vals += [cid, b.attrs.get("visibility", 1)]
            elif columns == 10:
                vals += [b.attrs.get(k, -1) for k in ("world_x", "world_y", "world_z")]
            rows.append((int(f), ident, ",".join(_num(v) for v in vals)))
    if problems:
        raise DataError(f"{len(problems)} box(es) cannot be written as MOT:\n  " + "\n  ".join(problems[:50]))
    rows.sort(key=lambda r: (r[0], r[1]))
    seq_dir = Path(seq_dir)
    sizes = {(s.width, s.height) for s in samples}
    exts = {Path(s.path).suffix.lower() for s in samples}
    with atomic_directory(seq_dir) as tmp:
        (tmp / "gt").mkdir()
        (tmp / "gt" / "gt.txt").write_text("".join(r[2] + "\n" for r in rows))
        for s, f in zip(samples, frames):
            _place_image(s.path, tmp / im_dir / f"{int(f):06d}{Path(s.path).suffix.lower()}", images)
        ini = ["[Sequence]", f"name={seq_dir.name}", f"imDir={im_dir}", f"seqLength={len(samples)}"]
        if len(sizes) == 1:
            (w0, h0), = sizes
            ini += [f"imWidth={w0}", f"imHeight={h0}"]
        if len(exts) == 1:
            ini.append(f"imExt={next(iter(exts))}")
        (tmp / "seqinfo.ini").write_text("\n".join(ini) + "\n")
    return seq_dir


# -- box-aware augmentation -----------------------------------------------------------------------
class AugmentResult(NamedTuple):
    image: np.ndarray
    boxes: np.ndarray  # (K, 4) float64 xyxy, inside [0, W] x [0, H], sides > min_size
    labels: list[Any]
    indices: np.ndarray  # (K,) int64: which input box each output box comes from


def build_detection_augment(transforms: Sequence[Any], min_visibility: float = 0.3, min_size: float = 2.0,
                            seed: int = 0):
    """An albumentations ``Compose`` over ``transforms`` that moves ``pascal_voc`` (xyxy pixel) boxes along.

    Boxes are clipped to the image (``clip=True``) and dropped when less than ``min_visibility`` of them
    stays visible or a side becomes shorter than ``min_size`` pixels. The label fields are ``labels`` and
    ``indices``; use :func:`apply_detection_augment` to run it.
    """
    import albumentations as A

    for t in transforms:
        if not isinstance(t, (A.BasicTransform, A.BaseCompose)):
            raise TypeError(f"detection augment entries must be albumentations transforms, got {type(t).__name__}")
    if not 0 <= min_visibility <= 1 or min_size < 0:
        raise ValueError(f"min_visibility must be in [0, 1] and min_size >= 0, got {min_visibility}, {min_size}")
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels", "indices"], min_visibility=min_visibility,
                               min_width=min_size, min_height=min_size, clip=True, filter_invalid_bboxes=True)
    with warnings.catch_warnings():  # a photometric-only pipeline is fine: boxes just pass through
        warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform to process it")
        return A.Compose(list(transforms), bbox_params=bbox_params, seed=seed)


def apply_detection_augment(pipeline, image: np.ndarray, boxes_xyxy: np.ndarray, labels: Sequence[Any],
                            seed: int | None) -> AugmentResult:
    """Run ``pipeline`` (from :func:`build_detection_augment`) on one image and its boxes with ``seed``.

    Input boxes are first clipped to the image and filtered by the pipeline's visibility/size rule (so
    boxes partly outside are accepted). After the transform a final guard clips float noise and keeps only
    boxes that are finite, inside ``[0, W] x [0, H]`` and have ``x2 > x1 + min_size`` and
    ``y2 > y1 + min_size``; ``indices`` say which input box each output box is.
    """
    params = pipeline.processors["bboxes"].params
    min_vis = float(params.min_visibility)
    min_size = float(max(params.min_width, params.min_height))
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    labels = list(labels)
    if len(labels) != len(boxes):
        raise ValueError(f"apply_detection_augment: {len(boxes)} boxes but {len(labels)} labels")
    h, w = image.shape[:2]
    keep, clipped = clip_and_filter(boxes, labels, w, h, min_visibility=min_vis, min_size=min_size)
    strict = (clipped[:, 2] > clipped[:, 0] + min_size) & (clipped[:, 3] > clipped[:, 1] + min_size)
    keep, clipped = keep[strict], clipped[strict]
    if seed is not None:
        pipeline.set_random_seed(seed)
    out = pipeline(image=image, bboxes=clipped, labels=[labels[i] for i in keep], indices=[int(i) for i in keep])
    img = out["image"]
    oh, ow = img.shape[:2]
    ob = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
    oidx = np.asarray(out["indices"], dtype=np.float64).reshape(-1)
    olab = list(out["labels"])
    # final guard: clip float noise, then keep only valid boxes (strict min_size)
    gk, gb = clip_and_filter(ob, olab, ow, oh, min_visibility=min_vis, min_size=min_size)
    ok = (np.isfinite(gb).all(axis=1) & (gb[:, 2] > gb[:, 0] + min_size) & (gb[:, 3] > gb[:, 1] + min_size)
          & (gb[:, 0] >= 0) & (gb[:, 1] >= 0) & (gb[:, 2] <= ow) & (gb[:, 3] <= oh)) if len(gk) else np.zeros(0, bool)
    gk, gb = gk[ok], gb[ok]
    return AugmentResult(img, gb, [olab[i] for i in gk], oidx[gk].round().astype(np.int64))
