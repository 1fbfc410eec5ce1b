"""Export a FiftyOne view as a versioned, immutable training snapshot.

``<root>/<name>/`` holds one folder per format (``coco/annotations.json`` + ``coco/images/...``,
``yolo/``, ``voc/``, written by the data layer's writers; ``market/`` (re-id crops in the Market-1501
layout) and ``classes/`` (class folders), written by :mod:`vision.curation.formats`) and ``manifest.json``:

* ``snapshot_id``: sha256 over the sorted (path, sha256) list of the data files (same data, same id);
* ``files``: sha256 of every data file; ``counts``: samples, boxes, per class, per source (samples and
  boxes), per split and per kind; ``label_schema``: label field, classes (COCO category ids are their
  1-based positions), box attributes, sample fields;
* ``parent``: name and id of the snapshot this one derives from (or null);
* ``view``: the dataset name and the view's serialized stages (rebuild it with :func:`rebuild_view`);
* ``sample_keys``: the ``key`` of every exported sample, in order; ``created_at`` (UTC);
* ``left_out``: samples of the view a format could not take (no detections / no image label), by key.

The folder is built in a temporary sibling and renamed in one step; an existing snapshot is never
overwritten (``FileExistsError``) and its files are made read-only. :func:`verify_snapshot` re-hashes it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from vision.curation.load import CLS_FIELD, DET_FIELD, to_detection_samples, to_samples
from vision.errors import DataError
from vision.utils.io import atomic_directory, sha256_file

__all__ = ["SNAPSHOT_FORMATS", "DETECTION_FORMATS", "IMAGE_FORMATS", "MANIFEST", "export_snapshot", "read_manifest", "verify_snapshot",
           "rebuild_view", "list_snapshots"]

DETECTION_FORMATS = ("coco", "yolo", "voc")
IMAGE_FORMATS = ("market", "classes")
SNAPSHOT_FORMATS = DETECTION_FORMATS + IMAGE_FORMATS
MANIFEST = "manifest.json"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _check_name(name: str) -> None:
    if not name or not set(name) <= _NAME_OK or name.startswith("."):
        raise DataError(f"snapshot name {name!r}: use letters, digits, '.', '_' and '-' (not starting with '.')")


def read_manifest(snapshot_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(snapshot_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{snapshot_dir}: not a snapshot (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable snapshot manifest ({e})") from e


def list_snapshots(root: str | os.PathLike) -> list[str]:
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def _files_and_id(folder: Path) -> tuple[dict[str, str], str]:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = sha256_file(p)
    h = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        h.update(f"{rel}\0{digest}\n".encode())
    return files, h.hexdigest()


def verify_snapshot(snapshot_dir: str | os.PathLike) -> dict[str, Any]:
    """Re-hash the snapshot's files; :class:`DataError` naming every changed, missing or extra file."""
    folder = Path(snapshot_dir)
    manifest = read_manifest(folder)
    files, sid = _files_and_id(folder)
    want = manifest.get("files", {})
    problems = [f"{rel}: missing" for rel in sorted(set(want) - set(files))]
    problems += [f"{rel}: not in the manifest" for rel in sorted(set(files) - set(want))]
    problems += [f"{rel}: sha256 differs" for rel in sorted(set(files) & set(want)) if files[rel] != want[rel]]
    if problems or sid != manifest.get("snapshot_id"):
        raise DataError(f"snapshot {folder} was modified:\n  " + "\n  ".join(problems or ["snapshot_id differs"]))
    return manifest


def rebuild_view(manifest: dict[str, Any]):
    """The FiftyOne view a snapshot was exported from (its dataset must still exist)."""
    from vision.curation.load import get_dataset

    import fiftyone.core.view as fov

    dataset = get_dataset(manifest["view"]["dataset"])
    stages = manifest["view"]["stages"]
    return fov.DatasetView._build(dataset, stages) if stages else dataset.view()


def _view_info(collection) -> dict[str, Any]:
    dataset = collection._dataset
    stages = collection._serialize() if hasattr(collection, "_serialize") and collection is not dataset else []
    return {"dataset": dataset.name, "stages": json.loads(json.dumps(stages, default=str)),
            "repr": [str(st) for st in getattr(collection, "_stages", [])] if stages else []}


def _make_read_only(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            mode = p.stat().st_mode
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _view_ids(collection, field: str) -> tuple[Any, list[str]]:
    """(the part of ``collection`` that has ``field``, keys of the samples left out)."""
    if collection.media_type == "video":  # MOT videos: the detections are frame-level, every frame is exported
        if field not in (collection.get_frame_field_schema() or {}):
            return collection.limit(0), list(collection.values("key"))
        return collection, []
    schema = collection.get_field_schema()
    if field not in schema:
        return collection.limit(0), list(collection.values("key"))
    have = collection.exists(field)
    left = collection.exists(field, False)
    return have, list(left.values("key")) if len(left) else []


def export_snapshot(collection, name: str, root: str | os.PathLike = "snapshots", *,
                    formats: Sequence[str] = ("coco",), parent: str | None = None,
                    classes: Sequence[str] | None = None, label_field: str = DET_FIELD,
                    images: str = "copy", note: str | None = None,
                    class_field: str = CLS_FIELD) -> Path:
    """Write ``collection`` (a FiftyOne dataset or view) as snapshot ``root/name``; returns its folder.

    Detection formats (``coco``, ``yolo``, ``voc``) write the samples that have ``label_field``; image-level
    formats (``market``: re-id crops, ``classes``: class folders) those that have ``class_field``. Samples of
    the view without the field a format needs are listed in the manifest's ``left_out`` (never dropped
    silently). ``classes``: the detection label schema (default: the dataset's ``default_classes`` recorded
    at load, then any other label in the view, sorted). ``parent``: an existing snapshot under ``root`` this
    one derives from. ``images``: ``copy`` (self-contained, default) or ``symlink``.
    """
    from vision.curation.formats import write_class_folders, write_market
    from vision.data.detection import write_coco, write_voc, write_yolo

    _check_name(name)
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in SNAPSHOT_FORMATS]
    if bad or not formats:
        raise DataError(f"snapshot formats must be among {SNAPSHOT_FORMATS}, got {list(formats)}")
    if images not in ("copy", "symlink"):
        raise DataError(f"snapshot images must be 'copy' or 'symlink', got {images!r}")
    root = Path(root)
    final = root / name
    if final.exists():
        raise FileExistsError(f"snapshot {final} already exists; snapshots are immutable (choose another name)")
    parent_info = None
    if parent:
        pm = read_manifest(root / parent)
        parent_info = {"name": parent, "snapshot_id": pm["snapshot_id"]}
    if not len(collection):
        raise DataError(f"the view to export as snapshot {name!r} has no samples")
    det_formats = [f for f in formats if f in DETECTION_FORMATS]
    img_formats = [f for f in formats if f in IMAGE_FORMATS]
    left_out: dict[str, Any] = {}
    samples: list = []
    isamples: list = []

    def labelled(field: str, fmts: list[str], convert, what: str) -> list:
        view, missing = _view_ids(collection, field)
        out = convert(view, field)
        if not out:
            raise DataError(f"snapshot {name!r}: no sample of the view has {what} (formats {fmts})"
                            + ("; use formats market / classes for image-level labels" if fmts is det_formats else ""))
        if missing:
            left_out[field] = {"formats": fmts, "count": len(missing), "keys": sorted(missing),
                               "reason": f"no {field} field"}
        return out

    if det_formats:
        samples = labelled(label_field, det_formats, to_detection_samples, f"{label_field!r} detections")
    if img_formats:
        isamples = labelled(class_field, img_formats, to_samples, f"a {class_field!r} label")
    seen = list(classes) if classes else list(collection._dataset.default_classes or [])
    labels = Counter(b.label for s in samples for b in s.boxes)
    if classes:
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise DataError(f"snapshot {name!r}: label(s) {unknown} are not in classes {list(classes)}")
    else:
        seen = [c for c in seen if c in labels] + sorted(set(labels) - set(seen))
    per_source: dict[str, dict[str, int]] = {}
    for s in samples:
        d = per_source.setdefault(s.source, {"samples": 0, "boxes": 0})
        d["samples"] += 1
        d["boxes"] += len(s.boxes)
    det_keys = {s.key for s in samples}
    for s in isamples:
        d = per_source.setdefault(s.source, {"samples": 0, "boxes": 0})
        d["samples"] += s.key not in det_keys
    image_labels = Counter(s.label for s in isamples)
    box_attrs = sorted({k for s in samples for b in s.boxes for k in b.attrs})
    keys = list(dict.fromkeys([s.key for s in samples] + [s.key for s in isamples]))
    view_info = _view_info(collection)
    schema_fields = sorted(collection.get_field_schema())
    splits = Counter(str(v) for v in collection.values("split")) if "split" in schema_fields else Counter()
    kinds = Counter(str(v) for v in collection.values("kind")) if "kind" in schema_fields else Counter()

    with atomic_directory(final) as tmp:
        for fmt in formats:
            if fmt == "coco":
                write_coco(samples, tmp / "coco", seen, images=images,
                           info={"snapshot": name, "dataset": view_info["dataset"]})
            elif fmt == "yolo":
                write_yolo(samples, tmp / "yolo", seen, images=images)
            elif fmt == "voc":
                write_voc(samples, tmp / "voc", images=images)
            elif fmt == "market":
                write_market(isamples, tmp / "market", images=images, name=name)
            else:
                write_class_folders(isamples, tmp / "classes", images=images, name=name)
        files, sid = _files_and_id(tmp)
        label_schema: dict[str, Any] = {}
        if det_formats:
            label_schema = {"label_field": label_field, "type": "detections", "classes": seen,
                            "box_attributes": box_attrs, "sample_fields": schema_fields}
        if img_formats:
            reid = any(s.meta.get("identity") is not None for s in isamples)
            block = {"label_field": class_field, "type": "reid" if reid else "classification",
                     "classes": sorted(image_labels), "sample_fields": schema_fields}
            if label_schema:
                label_schema["image_labels"] = block
            else:
                label_schema = block
        counts = {"samples": len(keys), "boxes": sum(labels.values()), "per_class": dict(sorted(labels.items())),
                  "per_source": dict(sorted(per_source.items())), "per_split": dict(sorted(splits.items())),
                  "per_kind": dict(sorted(kinds.items()))}
        if img_formats:
            counts["per_image_label"] = dict(sorted(image_labels.items()))
            if not det_formats:
                counts["per_class"] = dict(sorted(image_labels.items()))
            if any(s.meta.get("identity") is not None for s in isamples):
                counts["identities"] = len({s.meta.get("identity") for s in isamples})
                counts["per_role"] = dict(sorted(Counter(str(s.meta.get("role")) for s in isamples).items()))
        manifest = {
            "name": name, "snapshot_id": sid,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dataset": view_info["dataset"], "view": view_info, "parent": parent_info, "formats": formats,
            "note": note, "counts": counts, "label_schema": label_schema, "left_out": left_out,
            "files": files, "sample_keys": keys,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _make_read_only(tmp)
    return final
