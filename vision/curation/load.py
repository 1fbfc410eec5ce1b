"""Load data sources into named, persistent FiftyOne datasets, losing nothing on the way.

Supported formats (``format=``): ``coco`` (a COCO JSON), ``yolo`` (``images/`` + ``labels/``; class names
from ``classes`` or ``classes.txt``), ``voc`` (``images/`` + ``annotations/``, or ``images=`` /
``annotations=``), ``mot`` (a MOTChallenge sequence folder), ``scene`` (the scene engine's COCO output: a
folder with ``annotations.json``), ``image_folder`` (``root/<class>/<image>``), ``market`` (Market-1501),
``mars`` (MARS) and ``auto`` (guessed from the path). Any object with a ``load()`` method returning
:class:`~vision.data.boxes.DetectionSample` or :class:`~vision.data.samples.Sample` lists (e.g. a
:class:`~synthetic.detection_source.SceneDetectionSource`) can be loaded with :func:`load_samples`.

Per sample (FiftyOne fields):

``key``
    ``<source>:<relpath>``, stable across machines; re-loading a source is idempotent by ``key``.
``source``, ``relpath``, ``width``, ``height``, ``format``
    where it came from (``metadata`` is filled with the image size too).
``licence``, ``kind`` (real / synthetic / refined), ``camera`` (str), ``frame``, ``sequence``, ``split``,
``condition``
    promoted for filtering in the App; editing them changes what :mod:`vision.curation.export` writes.
``provenance``
    generator, version, scene seed and every generator parameter (a dict), for synthetic / refined data.
``meta``
    the reader's sample meta, plus the split / licence / kind / camera given at load time (what the
    exporters write back).
``ground_truth`` (:data:`DET_FIELD`)
    ``fo.Detections``: relative boxes ``[x/W, y/H, w/W, h/H]``; each detection keeps its pixel box
    ``bbox_px = [x1, y1, x2, y2]`` (used on export unless the relative box was edited, so a round trip is
    bit-exact), ``identity`` (also FiftyOne's ``index``), every box attribute as a detection attribute
    (names clashing with FiftyOne's own fields get an ``attr_`` prefix) and ``attr_keys`` (their names).
``classification`` (:data:`CLS_FIELD`)
    ``fo.Classification`` for class folders and re-id crops (re-id: ``identity``, ``role`` too).

Missing or unreadable images (and everything a reader skipped) are listed in the :class:`LoadReport` with
the reason, stored in ``dataset.info["load_reports"]`` and optionally written to a JSON file.
"""
from __future__ import annotations

import datetime as _dt
import gc
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from vision.data.boxes import Box, DetectionSample
from vision.data.samples import Sample
from vision.errors import DataError
from vision.utils.io import atomic_write_json

__all__ = [
    "DET_FIELD", "CLS_FIELD", "FORMATS", "LoadReport", "get_dataset", "open_dataset", "read_source",
    "load_source", "load_samples", "to_detection_samples", "detection_from_box", "box_from_detection",
    "derived_label_attrs", "to_samples", "load_mot_video",
]

DET_FIELD = "ground_truth"
CLS_FIELD = "classification"
FORMATS = ("auto", "coco", "yolo", "voc", "mot", "scene", "image_folder", "market", "mars")
KINDS = ("real", "synthetic", "refined")
ON_EXISTING = ("skip", "update")

#: sample meta keys promoted to their own FiftyOne field
PROMOTED = ("licence", "kind", "camera", "frame", "sequence", "split", "condition")
#: sample meta keys that describe how an image was made (collected in the ``provenance`` dict field)
PROVENANCE_KEYS = ("generator", "generator_version", "params", "scene", "scene_seed", "surface",
                   "crowd_density", "seed", "refiner", "refined_from", "recipe", "source_image")
#: detection attributes that are FiftyOne's own or ours (box attrs with these names get an ``attr_`` prefix)
_DET_OWN = ("id", "_id", "_cls", "attributes", "tags", "label", "bounding_box", "mask", "mask_path",
            "confidence", "index")
_DET_OURS = ("bbox_px", "identity", "attr_keys")
_ATTR_PREFIX = "attr_"


_FO: Any = None


def _fo():
    """``fiftyone``, configured through :mod:`vision.curation.db` (env / FiftyOne config decide the DB).

    Configured once per process (the check runs ``ldd`` on mongod in embedded mode; not per box).
    """
    global _FO
    if _FO is None:
        from vision.curation.db import import_fiftyone

        _FO = import_fiftyone()
    return _FO


# -- report -----------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What one load did: counts, and every item that did not make it in (with the reason)."""

    dataset: str
    source: str
    format: str
    path: str
    read: int = 0  # samples the reader produced
    added: int = 0
    existing: int = 0  # already in the dataset (same key), left as they are
    updated: int = 0  # already in the dataset, fields replaced (on_existing="update")
    boxes: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)  # where, item, code, reason
    clipped: int = 0
    created_at: str = ""

    @property
    def problem_count(self) -> int:
        return len(self.problems)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        by_code: dict[str, int] = {}
        for p in self.problems:
            by_code[p["code"]] = by_code.get(p["code"], 0) + 1
        d["problems_by_code"] = by_code
        return d


# -- datasets ---------------------------------------------------------------------------------------
def get_dataset(name: str):
    """An existing FiftyOne dataset; :class:`DataError` naming the known ones when it does not exist."""
    fo = _fo()
    if not fo.dataset_exists(name):
        known = ", ".join(sorted(fo.list_datasets())) or "none"
        raise DataError(f"unknown FiftyOne dataset {name!r} (existing datasets: {known})")
    return fo.load_dataset(name)


def open_dataset(name: str, persistent: bool = True):
    """The dataset ``name``, created (persistent by default) when it does not exist yet."""
    fo = _fo()
    if fo.dataset_exists(name):
        return fo.load_dataset(name)
    try:
        return fo.Dataset(name, persistent=persistent)
    except ValueError:  # created by another process in the meantime
        return fo.load_dataset(name)


# -- reading sources --------------------------------------------------------------------------------
def _guess_format(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{path}: cannot guess the format of a {path.suffix or 'extension-less'} file "
                        f"(give format=, one of {', '.join(FORMATS[1:])})")
    if (path / "gt" / "gt.txt").is_file():
        return "mot"
    if (path / "annotations.json").is_file():
        return "scene" if (path / "generation.json").is_file() else "coco"
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return "yolo"
    if (path / "images").is_dir() and (path / "annotations").is_dir():
        return "voc"
    if any((path / f).is_dir() for f in ("bounding_box_train", "bounding_box_test", "query")):
        return "market"
    if (path / "bbox_train").is_dir() or (path / "bbox_test").is_dir():
        return "mars"
    if any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return "image_folder"
    raise DataError(f"{path}: cannot guess the dataset format (give format=, one of {', '.join(FORMATS[1:])})")


def _card_licence(card: str | None) -> str | None:
    if not card:
        return None
    from vision.data import cards

    return str(cards.load_card(card).get("licence", "unknown"))


def read_source(path: str | os.PathLike, format: str = "auto", *, name: str | None = None,
                classes: Sequence[str] | None = None, images: str | None = None,
                annotations: str | None = None, images_root: str | None = None,
                frames_glob: str | None = None, label: str = "person",
                card: str | None = None) -> tuple[str, list, list[dict[str, str]], dict[str, Any]]:
    """Read one source with the project's readers, bad items skipped *and listed*.

    Returns ``(format, samples, problems, info)``: samples are DetectionSample (detection formats) or
    Sample (class folders, re-id); problems are ``{"where", "item", "code", "reason"}`` dicts.
    Raises :class:`DataError` for a path that does not exist or a source that cannot be read at all.
    """
    from vision.data import detection as det

    if format not in FORMATS:
        raise DataError(f"unknown source format {format!r} (one of {', '.join(FORMATS)})")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: source path not found")
    if format == "auto":
        format = _guess_format(p)
    problems: list[dict[str, str]] = []
    info: dict[str, Any] = {}

    def _issues(result: det.DetectionSet) -> None:
        problems.extend(asdict(i) for i in result.skipped)
        info.update(result.info)
        info["clipped"] = len(result.clipped)

    if format in ("coco", "scene"):
        ann = p / "annotations.json" if p.is_dir() else p
        result = det.read_coco(ann, images_root, source=name or (p.name if p.is_dir() else p.parent.name),
                               policy="skip")
        _issues(result)
        samples = list(result)
        if format == "scene":
            samples = [DetectionSample(s.path, s.width, s.height, s.boxes, s.source, s.relpath,
                                       {**s.meta, "generator": s.meta.get("generator", "synthetic.scene"),
                                        "kind": s.meta.get("kind", "synthetic")}) for s in samples]
    elif format == "yolo":
        if classes is None:
            cf = p / "classes.txt"
            if not cf.is_file():
                raise DataError(f"{p}: YOLO needs its class names: classes=[...] or {cf}")
            classes = [c.strip() for c in cf.read_text().splitlines() if c.strip()]
        result = det.read_yolo(p, classes, source=name, policy="skip")
        _issues(result)
        samples = list(result)
    elif format == "voc":
        img_dir = Path(images) if images else p / "images"
        ann_dir = Path(annotations) if annotations else p / "annotations"
        kw: dict[str, Any] = {"labels": list(classes)} if classes else {}
        result = det.read_voc(img_dir, ann_dir, source=name or p.name, policy="skip", missing_annotation="empty",
                              **kw)
        _issues(result)
        samples = list(result)
    elif format == "mot":
        result = det.read_mot(p, frames_glob, source=name, label=label, policy="skip")
        _issues(result)
        if frames_glob:  # gt lines of frames outside the chosen subset: listed, but as what they are
            for q in problems:
                if q["code"] == "missing_image" and q["item"] == "line":
                    q["code"] = "frame_not_selected"
        samples = list(result)
    elif format == "image_folder":
        from vision.data.readers import ImageFolderSource

        samples = ImageFolderSource(str(p), name=name, classes=list(classes) if classes else None,
                                    validate_images=False).load()
    elif format in ("market", "mars"):
        from vision.data.reid import MarketSource, MarsSource

        cls = MarketSource if format == "market" else MarsSource
        src = cls(str(p), name=name or p.name, card=card, verify_checksums=False, policy="skip",
                  validate_images=False)
        samples = src.load()
        problems.extend({"where": q.file, "item": "image", "code": "skipped", "reason": q.reason}
                        for q in src.report.skipped)
        problems.extend({"where": q.file, "item": "file", "code": "ignored_file", "reason": q.reason}
                        for q in src.report.ignored)
    else:  # pragma: no cover - guarded above
        raise DataError(f"unknown source format {format!r}")
    return format, samples, problems, info


def _check_file(path: str) -> tuple[tuple[int, int] | None, dict[str, str] | None]:
    """(width, height) from the image header, or the problem (missing / unreadable)."""
    if not os.path.isfile(path):
        return None, {"where": path, "item": "image", "code": "missing_image", "reason": f"image file {path} not found"}
    try:
        with Image.open(path) as im:
            return (int(im.width), int(im.height)), None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return None, {"where": path, "item": "image", "code": "unreadable_image",
                      "reason": f"image file {path} is unreadable ({e})"}


# -- conversion -------------------------------------------------------------------------------------
def _plain(v: Any) -> Any:
    """Plain Python values for MongoDB (tuples -> lists, numpy scalars -> numbers)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return _plain(v.tolist())
    return v


def _attr_field(key: str) -> str:
    return _ATTR_PREFIX + key if key in _DET_OWN or key in _DET_OURS or key.startswith(_ATTR_PREFIX) else key


def _relative(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> list[float]:
    return [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height]


def detection_from_box(box: Box, width: int, height: int):
    """``fo.Detection`` for a pixel :class:`Box` (see the module docstring for the attributes)."""
    fo = _fo()
    x1, y1, x2, y2 = (float(v) for v in box.xyxy)
    d = fo.Detection(label=box.label, bounding_box=_relative(x1, y1, x2, y2, width, height))
    d["bbox_px"] = [x1, y1, x2, y2]
    if box.identity is not None:
        d["identity"] = int(box.identity)
        d.index = int(box.identity)
    keys = []
    for k, v in box.attrs.items():
        d[_attr_field(str(k))] = _plain(v)
        keys.append(str(k))
    d["attr_keys"] = keys
    return d


def box_from_detection(d, width: int, height: int, skip: Iterable[str] = ()) -> Box:
    """The pixel :class:`Box` of a detection: its ``bbox_px`` unless the relative box was edited.

    ``skip``: attributes that evaluation / brain runs wrote onto the object (not box attributes)."""
    skip = set(skip)
    rel = [float(v) for v in d.bounding_box]
    px = d.get_field("bbox_px") if d.has_field("bbox_px") else None
    if px is not None and _relative(*(float(v) for v in px), width, height) == rel:
        x1, y1, x2, y2 = (float(v) for v in px)
    else:
        x1, y1 = rel[0] * width, rel[1] * height
        x2, y2 = x1 + rel[2] * width, y1 + rel[3] * height
    ident = d.get_field("identity") if d.has_field("identity") else None
    if ident is None and d.index is not None:
        ident = d.index
    keys = list(d.get_field("attr_keys") or []) if d.has_field("attr_keys") else []
    attrs: dict[str, Any] = {}
    for k in keys:
        f = _attr_field(k)
        if d.has_field(f):
            attrs[k] = d.get_field(f)
    for f in d.field_names:  # attributes added while curating
        if f in _DET_OWN or f in _DET_OURS or f in skip:
            continue
        k = f[len(_ATTR_PREFIX):] if f.startswith(_ATTR_PREFIX) and f[len(_ATTR_PREFIX):] in keys else f
        if k not in attrs and d.get_field(f) is not None:
            attrs[k] = d.get_field(f)
    return Box(x1, y1, x2, y2, d.label, None if ident is None else int(ident), attrs)


def _promoted(meta: dict[str, Any], *, split: str | None, licence: str | None, kind: str | None,
              camera: str | None, default_kind: str) -> dict[str, Any]:
    cam = camera if camera is not None else meta.get("camera")
    frame = meta.get("frame")
    kind_v = kind or meta.get("kind") or default_kind
    if kind_v not in KINDS:
        raise DataError(f"kind must be one of {KINDS}, got {kind_v!r}")
    return {
        "licence": str(licence or meta.get("licence") or "unknown"),
        "kind": kind_v,
        "camera": None if cam is None else str(cam),
        "frame": int(frame) if isinstance(frame, (int, float)) and not isinstance(frame, bool)
        and math.isfinite(frame) and float(frame).is_integer() else None,
        "sequence": None if meta.get("sequence") is None else str(meta["sequence"]),
        "split": split if split is not None else (None if meta.get("split") is None else str(meta["split"])),
        "condition": None if meta.get("condition") is None else str(meta["condition"]),
    }


def _fo_sample(s: DetectionSample | Sample, size: tuple[int, int], fmt: str, promoted: dict[str, Any],
               given: dict[str, Any] | None = None):
    """``(fo.Sample without its label field, {label field: label})``."""
    fo = _fo()
    meta = _plain(dict(s.meta))
    meta.update({k: v for k, v in (given or {}).items() if v is not None})  # load-time split / licence / kind...
    W, H = size
    prov = {k: meta[k] for k in PROVENANCE_KEYS if k in meta}
    fields: dict[str, Any] = {
        "key": s.key, "source": s.source, "relpath": s.relpath, "format": fmt, "width": W, "height": H,
        **promoted, "provenance": prov or None, "meta": meta, "loaded": dict(promoted),
    }
    labels: dict[str, Any] = {}
    if isinstance(s, DetectionSample):
        if (s.width, s.height) != (W, H):  # the reader trusted the annotation; the file disagrees
            raise ValueError(f"annotation says {s.width}x{s.height} but the image is {W}x{H}")
        labels[DET_FIELD] = fo.Detections(detections=[detection_from_box(b, W, H) for b in s.boxes])
    else:
        labels[CLS_FIELD] = fo.Classification(label=s.label)
        if "identity" in meta:
            fields["identity"] = None if meta["identity"] is None else str(meta["identity"])
            fields["role"] = meta.get("role")
    sample = fo.Sample(filepath=s.path, metadata=fo.ImageMetadata(width=W, height=H))
    for k, v in fields.items():
        sample[k] = v
    return sample, labels


PENDING_FIELD = "load_pending"


def _pending_keys(dataset) -> set[str]:
    """Keys of samples whose load was interrupted between its two steps (see :func:`_add_in_two_steps`)."""
    if PENDING_FIELD not in dataset.get_field_schema():
        return set()
    return set(dataset.exists(PENDING_FIELD).values("key"))


def _add_in_two_steps(dataset, samples: list, labels: list[dict[str, Any]]) -> None:
    """Insert the samples (the list is emptied), then their labels with one bulk write per label field (several times faster than
    inserting labelled samples: FiftyOne rebuilds every inserted sample's document in memory). Until the
    labels are written the samples carry ``load_pending`` (a load id); a load interrupted in between is
    completed by the next load of the same samples (replaced, reported as ``recovered``), and
    snapshots leave pending samples out."""
    import uuid

    load_id = uuid.uuid4().hex
    for fs in samples:
        fs[PENDING_FIELD] = load_id
    ids = dataset.add_samples(samples, progress=False)
    samples.clear()  # no in-memory samples left for FiftyOne to reload after each bulk write below
    gc.collect()
    target = dataset.select(ids, ordered=True)
    for name in sorted({k for lab in labels for k in lab}):
        target.set_values(name, [lab.get(name) for lab in labels], progress=False)
    target.set_values(PENDING_FIELD, [None] * len(ids), progress=False)


# -- loading ----------------------------------------------------------------------------------------
def load_samples(dataset_name: str, samples: Iterable[DetectionSample | Sample], *, format: str = "python",
                 path: str = "", source_name: str | None = None, split: str | None = None,
                 licence: str | None = None, kind: str | None = None, camera: str | None = None,
                 default_kind: str = "real", problems: Sequence[dict[str, str]] = (),
                 info: dict[str, Any] | None = None, on_existing: str = "skip", persistent: bool = True,
                 report: str | os.PathLike | None = None) -> LoadReport:
    """Add already-read samples to the dataset ``dataset_name`` (created if needed), idempotent by key.

    Each image header is read: a missing or unreadable file (or a size that disagrees with the
    annotation) is listed in the report's ``problems`` and not added. ``on_existing``: ``"skip"``
    (default) leaves samples whose key is already in the dataset as they are (curation edits stay);
    ``"update"`` replaces their fields with the source's.
    """
    if on_existing not in ON_EXISTING:
        raise DataError(f"on_existing must be one of {ON_EXISTING}, got {on_existing!r}")
    samples = list(samples)
    src = source_name or (samples[0].source if samples else Path(str(path)).name)
    rep = LoadReport(dataset_name, src, format, str(path), read=len(samples), problems=list(problems),
                     clipped=int((info or {}).get("clipped", 0)),
                     created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    dataset = open_dataset(dataset_name, persistent=persistent)
    existing = set(dataset.distinct("key")) if "key" in dataset.get_field_schema() else set()
    new, new_labels, update, seen = [], [], [], set()
    labels: list[str] = []
    for cat in (info or {}).get("categories") or []:
        labels.append(cat["name"])
    labels.extend((info or {}).get("classes") or [])
    pending_keys = _pending_keys(dataset)
    for s in samples:
        if s.key in seen:
            rep.problems.append({"where": s.key, "item": "image", "code": "duplicate_key",
                                 "reason": f"key {s.key} appears twice in the source ({s.path})"})
            continue
        seen.add(s.key)
        size, problem = _check_file(s.path)
        if problem is not None:
            rep.problems.append(problem)
            continue
        if isinstance(s, DetectionSample):
            labels.extend(b.label for b in s.boxes)
        else:
            labels.append(s.label)
        if s.key in existing and s.key not in pending_keys and on_existing == "skip":
            rep.existing += 1
            continue
        try:
            promoted = _promoted(s.meta, split=split, licence=licence, kind=kind, camera=camera,
                                 default_kind=default_kind)
            fs, lab = _fo_sample(s, size, format, promoted,  # type: ignore[arg-type]
                                 {"split": split, "licence": licence, "kind": kind, "camera": camera})
        except (ValueError, TypeError) as e:
            rep.problems.append({"where": s.path, "item": "image", "code": "invalid", "reason": str(e)})
            continue
        if isinstance(s, DetectionSample):
            rep.boxes += len(s.boxes)
        if s.key in existing and s.key not in pending_keys:
            for k, v in lab.items():
                fs[k] = v
            update.append(fs)
        else:
            new.append(fs)
            new_labels.append(lab)
    if pending_keys & seen:  # an interrupted earlier load of these samples: replaced now
        stale = dataset.match(_fo().ViewField("key").is_in(sorted(pending_keys & seen)))
        rep.problems.append({"where": str(path), "item": "load", "code": "recovered",
                             "reason": f"{len(stale)} sample(s) of an interrupted load were replaced"})
        dataset.delete_samples(stale)
    if new:
        rep.added = len(new)
        _add_in_two_steps(dataset, new, new_labels)  # (empties new)
    if update:
        dataset.merge_samples(update, key_field="key", insert_new=False, merge_lists=False, progress=False)
        rep.updated = len(update)
    del new, new_labels, update  # (in-memory samples would otherwise be reloaded one by one below)
    return _finish_load(dataset, labels, rep, report)


def load_source(dataset_name: str, path: str | os.PathLike, format: str = "auto", *, name: str | None = None,
                split: str | None = None, licence: str | None = None, kind: str | None = None,
                camera: str | None = None, card: str | None = None, classes: Sequence[str] | None = None,
                images: str | None = None, annotations: str | None = None, images_root: str | None = None,
                frames_glob: str | None = None, label: str = "person", on_existing: str = "skip",
                persistent: bool = True, report: str | os.PathLike | None = None) -> LoadReport:
    """Read a source from disk (:func:`read_source`) and load it into ``dataset_name`` (:func:`load_samples`).

    ``licence``: given, else the sample meta's, else the dataset card's (``card=``), else ``"unknown"``.
    ``kind``: given, else the meta's, else ``synthetic`` for the scene engine and ``real`` otherwise.
    """
    fmt, samples, problems, info = read_source(path, format, name=name, classes=classes, images=images,
                                               annotations=annotations, images_root=images_root,
                                               frames_glob=frames_glob, label=label, card=card)
    licence = licence or _card_licence(card)  # None: the meta's (the scene engine writes "generated")
    return load_samples(dataset_name, samples, format=fmt, path=str(path), source_name=name, split=split,
                        licence=licence, kind=kind, camera=camera,
                        default_kind="synthetic" if fmt == "scene" else "real", problems=problems, info=info,
                        on_existing=on_existing, persistent=persistent, report=report)


# -- MOT sequences as videos -------------------------------------------------------------------------
def _encode_video(frames: Sequence[str | None], size: tuple[int, int], fps: float, dest: Path) -> list[str | None]:
    """Write the frames (None / unreadable: black) as an MPEG-4 file, atomically; per frame, the problem."""
    import cv2
    import numpy as np

    W, H = size
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.partial{dest.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        raise DataError(f"{dest}: OpenCV cannot write an MPEG-4 video here")
    problems: list[str | None] = []
    try:
        for path in frames:
            img, why = None, None
            if path is None:
                why = "no image for this frame"
            else:
                try:
                    with Image.open(path) as im:
                        img = np.asarray(im.convert("RGB"))
                except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
                    why = f"image file {path} is unreadable ({e})"
            if img is not None and img.shape[:2] != (H, W):
                why, img = f"image {path} is {img.shape[1]}x{img.shape[0]}, the sequence {W}x{H}", None
            problems.append(why)
            writer.write(np.zeros((H, W, 3), np.uint8) if img is None else np.ascontiguousarray(img[..., ::-1]))
    finally:
        writer.release()
    os.replace(tmp, dest)
    return problems


def load_mot_video(dataset_name: str, path: str | os.PathLike, *, video_dir: str | os.PathLike,
                   name: str | None = None, frames_glob: str | None = None, label: str = "person",
                   split: str | None = None, licence: str | None = None, kind: str | None = None,
                   camera: str | None = None, card: str | None = None, fps: float | None = None,
                   on_existing: str = "skip", persistent: bool = True,
                   report: str | os.PathLike | None = None) -> LoadReport:
    """Load a MOT sequence as **one video sample** with frame-level detections.

    The frames are encoded to ``video_dir/<source>.mp4`` (MPEG-4; the shared data is never written) and
    the sample gets ``fo.VideoMetadata``; every frame ``n`` (1-based, in frame order) has
    ``frames[n].ground_truth`` (as for images: ``bbox_px``, ``identity``, attributes), ``mot_frame`` (the
    sequence's frame number), ``image_path`` / ``relpath`` / ``meta`` (the frame image it came from).
    A frame image that is missing or unreadable becomes a black video frame, ``frames[n].problem`` says
    why and the report lists it. The dataset must be a video dataset (new, or loaded with videos before).
    """
    fo = _fo()
    if on_existing not in ON_EXISTING:
        raise DataError(f"on_existing must be one of {ON_EXISTING}, got {on_existing!r}")
    p = Path(path).expanduser()
    fmt, samples, problems, info = read_source(p, "mot", name=name, frames_glob=frames_glob, label=label, card=card)
    if not samples:
        raise DataError(f"{p}: no frames to make a video of")
    src = name or samples[0].source
    samples = sorted(samples, key=lambda s: (s.meta.get("frame") if s.meta.get("frame") is not None else -1, s.key))
    rep = LoadReport(dataset_name, src, "mot-video", str(path), read=len(samples), problems=list(problems),
                     clipped=int(info.get("clipped", 0)),
                     created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    dataset = open_dataset(dataset_name, persistent=persistent)
    if len(dataset) and dataset.media_type != "video":
        raise DataError(f"dataset {dataset_name!r} holds {dataset.media_type} samples; load MOT sequences as videos "
                        f"into a dataset of their own (source.as_video=true with another dataset=)")
    key = f"{src}:{p.name}.mp4"
    existing = set(dataset.distinct("key")) if "key" in dataset.get_field_schema() else set()
    if key in existing and on_existing == "skip":
        rep.existing = 1
    else:
        from vision.data.detection import _seqinfo

        seqinfo = _seqinfo(p)
        rate = float(fps or seqinfo.get("framerate") or seqinfo.get("frameRate") or 25.0)
        W, H = samples[0].width, samples[0].height
        paths: list[str | None] = []
        for s in samples:
            size, problem = _check_file(s.path)
            if problem is not None:
                rep.problems.append(problem)
                paths.append(None)
            else:
                paths.append(s.path)
        dest = Path(video_dir).expanduser() / f"{src}.mp4"
        frame_problems = _encode_video(paths, (W, H), rate, dest)
        for s, why in zip(samples, frame_problems):
            if why is not None and s.path in paths:  # readable header, undecodable or wrong-size pixels
                rep.problems.append({"where": s.path, "item": "image", "code": "unreadable_image", "reason": why})
        promoted = _promoted(samples[0].meta, split=split, licence=licence or _card_licence(card), kind=kind,
                             camera=camera, default_kind="real")
        promoted["frame"] = None
        meta = _plain({k: v for k, v in samples[0].meta.items() if k != "frame"})
        sample = fo.Sample(filepath=str(dest.resolve()), metadata=fo.VideoMetadata(
            size_bytes=dest.stat().st_size, mime_type="video/mp4", frame_width=W, frame_height=H,
            frame_rate=rate, total_frame_count=len(samples), duration=len(samples) / rate, encoding_str="mp4v"))
        fields = {"key": key, "source": src, "relpath": p.name, "format": "mot-video", "width": W, "height": H,
                  **promoted, "provenance": None, "meta": meta, "loaded": dict(promoted), "frames_dir": str(p)}
        for k, v in fields.items():
            sample[k] = v
        for n, (s, why) in enumerate(zip(samples, frame_problems), start=1):
            frame = fo.Frame(mot_frame=s.meta.get("frame"), image_path=s.path, relpath=s.relpath,
                             meta=_plain(dict(s.meta)), problem=why)
            frame[DET_FIELD] = fo.Detections(detections=[detection_from_box(b, W, H) for b in s.boxes])
            sample.frames[n] = frame
            rep.boxes += len(s.boxes)
        if key in existing:
            dataset.delete_samples(dataset.match(fo.ViewField("key") == key))
            rep.updated = 1
        else:
            rep.added = 1
        dataset.add_sample(sample)
    return _finish_load(dataset, sorted({b.label for s in samples for b in s.boxes}), rep, report)


def _finish_load(dataset, labels, rep, report):
    """After a load: new labels join the dataset's classes, the report joins its last 100 load reports
    (and ``report``, a file, when given)."""
    classes = list(dataset.default_classes or [])
    if any(lab not in classes for lab in labels):
        dataset.default_classes = classes + [lab for lab in dict.fromkeys(labels) if lab not in classes]
    dataset.reload()
    reports = list(dataset.info.get("load_reports", []))
    reports.append(rep.to_dict())
    dataset.info["load_reports"] = reports[-100:]
    dataset.save()
    if report is not None:
        atomic_write_json(report, rep.to_dict())
    return rep


# -- back to the data layer -------------------------------------------------------------------------
def _meta_of(sample) -> dict[str, Any]:
    meta = dict(sample["meta"] or {}) if sample.has_field("meta") else {}
    loaded = (sample["loaded"] or {}) if sample.has_field("loaded") else {}
    for k in PROMOTED:
        if not sample.has_field(k):
            continue
        cur = sample[k]
        if k in loaded and cur == loaded[k]:
            continue  # unchanged since loading: the meta (original types) stays as it was
        if cur is None:
            meta.pop(k, None)
        else:
            meta[k] = cur
    return meta


def derived_label_attrs(collection, label_field: str = DET_FIELD) -> set[str]:
    """Attributes that evaluations and brain runs wrote onto ``label_field``'s objects (``<eval_key>``,
    ``<eval_key>_id`` / ``_iou``, mistakenness...): curation results, not annotations."""
    dataset = collection._dataset
    out = set((dataset.info.get("derived_label_attrs") or {}).get(label_field, []))
    for key in dataset.list_evaluations():
        out.update((key, f"{key}_id", f"{key}_iou"))
    return out


def to_detection_samples(collection, label_field: str = DET_FIELD) -> list[DetectionSample]:
    """The samples of a dataset / view as :class:`DetectionSample` (in the collection's order)."""
    out = []
    skip = derived_label_attrs(collection, label_field)
    if collection.media_type == "video":  # MOT sequences loaded as videos: one sample per frame image
        label_field = label_field[len("frames."):] if label_field.startswith("frames.") else label_field
        for s in collection.iter_samples(autosave=False):
            W, H = int(s["width"]), int(s["height"])
            seq_meta = _meta_of(s)
            for n in sorted(s.frames.keys()):
                fr = s.frames[n]
                dets = fr[label_field] if fr.has_field(label_field) else None
                boxes = [box_from_detection(d, W, H, skip) for d in (dets.detections if dets is not None else [])]
                meta = dict(fr["meta"] or {}) if fr.has_field("meta") else {}
                meta.update({k: v for k, v in seq_meta.items() if k in PROMOTED and k != "frame"})
                out.append(DetectionSample(fr["image_path"], W, H, boxes, s["source"], fr["relpath"], meta))
        return out
    fast = _raw_detection_samples(collection, label_field, skip)
    if fast is not None:
        return fast
    for s in collection.iter_samples(autosave=False):
        W, H = int(s["width"]), int(s["height"])
        dets = s[label_field] if s.has_field(label_field) else None
        boxes = [box_from_detection(d, W, H, skip) for d in (dets.detections if dets is not None else [])]
        out.append(DetectionSample(s.filepath, W, H, boxes, s["source"], s["relpath"], _meta_of(s)))
    return out


def _box_from_raw(dd: dict[str, Any], width: int, height: int, skip: set[str]) -> Box:
    """:func:`box_from_detection` on a detection's stored document (a dict)."""
    rel = [float(v) for v in dd["bounding_box"]]
    px = dd.get("bbox_px")
    if px is not None and _relative(*(float(v) for v in px), width, height) == rel:
        x1, y1, x2, y2 = (float(v) for v in px)
    else:
        x1, y1 = rel[0] * width, rel[1] * height
        x2, y2 = x1 + rel[2] * width, y1 + rel[3] * height
    ident = dd.get("identity")
    if ident is None and dd.get("index") is not None:
        ident = dd["index"]
    keys = list(dd.get("attr_keys") or [])
    attrs: dict[str, Any] = {}
    for k in keys:
        f = _attr_field(k)
        if f in dd:
            attrs[k] = dd[f]
    for f, v in dd.items():
        if f in _DET_OWN or f in _DET_OURS or f in skip:
            continue
        k = f[len(_ATTR_PREFIX):] if f.startswith(_ATTR_PREFIX) and f[len(_ATTR_PREFIX):] in keys else f
        if k not in attrs and v is not None:
            attrs[k] = v
    return Box(x1, y1, x2, y2, dd["label"], None if ident is None else int(ident), attrs)


def _raw_detection_samples(collection, label_field: str, skip: set[str]) -> list[DetectionSample] | None:
    """The same as the document path of :func:`to_detection_samples`, from the stored documents in one query
    (several times faster: no FiftyOne sample objects); None when the fields or FiftyOne do not allow it."""
    schema = collection.get_field_schema()
    if not {"width", "height", "source", "relpath"} <= set(schema):
        return None
    extra = [f for f in ("meta", "loaded", label_field, *PROMOTED) if f in schema]
    try:
        cols = collection.values(["filepath", "width", "height", "source", "relpath", *extra], _raw=True)
    except TypeError:  # a FiftyOne without raw values
        return None
    base, by_name = cols[:5], dict(zip(extra, cols[5:]))
    out = []
    for i, (path, W, H, source, relpath) in enumerate(zip(*base)):
        W, H = int(W), int(H)
        meta = dict(by_name["meta"][i] or {}) if "meta" in by_name else {}
        loaded = (by_name["loaded"][i] or {}) if "loaded" in by_name else {}
        for k in PROMOTED:
            if k not in by_name:
                continue
            cur = by_name[k][i]
            if k in loaded and cur == loaded[k]:
                continue
            if cur is None:
                meta.pop(k, None)
            else:
                meta[k] = cur
        dets = by_name[label_field][i] if label_field in by_name else None
        boxes = [_box_from_raw(dd, W, H, skip) for dd in ((dets or {}).get("detections") or [])]
        out.append(DetectionSample(path, W, H, boxes, source, relpath, meta))
    return out


def to_samples(collection, label_field: str = CLS_FIELD) -> list[Sample]:
    """The samples of a dataset / view as image-level :class:`Sample` records (class folders, re-id crops).

    Re-id samples (with an ``identity`` field): an edited ``identity`` field wins; else an edited
    classification label ``<namespace>:<identity>`` sets the identity; ``role`` comes from its field.
    """
    out = []
    for s in collection.iter_samples(autosave=False):
        meta = _meta_of(s)
        lab = s[label_field] if s.has_field(label_field) else None
        label = lab.label if lab is not None else None
        if s.has_field("identity") and s["identity"] is not None or "identity" in meta:
            orig = None if meta.get("identity") is None else str(meta["identity"])
            ident = s["identity"] if s.has_field("identity") else orig
            ns, _, from_label = (label or "").rpartition(":")
            if ident == orig and from_label and from_label != orig:
                ident = from_label
            meta["identity"] = ident
            if s.has_field("role"):
                meta["role"] = s["role"]
            label = f"{ns or s['source']}:{ident}"
        if label is None:
            raise DataError(f"sample {s['key'] if s.has_field('key') else s.filepath}: no {label_field} label")
        out.append(Sample(s.filepath, label, s["source"], s["relpath"], meta))
    return out
