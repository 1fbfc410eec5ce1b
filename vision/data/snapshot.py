"""Train on a curated dataset snapshot: ``python train.py experiment=detection data=snapshot data.snapshot=v1``.

A snapshot is the immutable folder ``python -m vision.curate action=export-snapshot`` writes (see
:mod:`vision.curation.export`): one folder per format and a ``manifest.json`` with the sha256 of every
file and a ``snapshot_id``. :class:`SnapshotSource` re-hashes the snapshot before reading it and refuses
a modified one (naming each changed, missing or extra file), then reads one of its formats with the
project's readers: ``coco`` / ``yolo`` / ``voc`` (detection samples), ``classes`` (class folders) or
``market`` (re-id crops). Its dataset card carries the snapshot's name, id, dataset, parent and counts,
so the id reaches MLflow with the run's data cards (``data/cards/<name>.yaml``) and checkpoints.

The datamodules (:class:`SnapshotDetectionDataModule`, :class:`SnapshotClassificationDataModule`) take
``snapshot`` (a name under ``snapshots_root``, or a snapshot folder) instead of ``sources``; classes
default to the manifest's label schema, and each sample's ``split`` recorded in the snapshot is used
(``snapshot_splits: auto`` when every sample has one, ``require``, or ``ignore`` for the recipe's split).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from vision.data import splits as split_mod
from vision.data.classification import ClassificationDataModule
from vision.data.detection_module import DetectionDataModule
from vision.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["SnapshotSource", "SnapshotDetectionDataModule", "SnapshotClassificationDataModule", "resolve_snapshot",
           "SNAPSHOT_SPLITS"]

DETECTION = ("coco", "yolo", "voc")
IMAGE = ("classes", "market")
SNAPSHOT_SPLITS = ("auto", "require", "ignore")


def resolve_snapshot(snapshot: str, root: str | Path | None = None) -> Path:
    """The folder of ``snapshot`` (a name under ``root``, or a path); DataError listing what exists."""
    from vision.curation.export import MANIFEST, list_snapshots

    if not snapshot or str(snapshot) == "???":
        raise DataError("data.snapshot=NAME is required (a snapshot written by python -m vision.curate "
                        "action=export-snapshot)")
    p = Path(str(snapshot)).expanduser()
    if (p / MANIFEST).is_file():
        return p
    if root is not None and (Path(root).expanduser() / str(snapshot) / MANIFEST).is_file():
        return Path(root).expanduser() / str(snapshot)
    where = Path(root).expanduser() if root is not None else None
    known = ", ".join(list_snapshots(where)) if where is not None and where.is_dir() else ""
    raise DataError(f"snapshot {snapshot!r} not found (looked for {p / MANIFEST}"
                    + (f" and {where / str(snapshot) / MANIFEST}" if where is not None else "") + "); "
                    + (f"snapshots in {where}: {known}" if known else "no snapshots there")
                    + " (data.snapshots_root=...)")


class SnapshotSource:
    """One snapshot as a data source (see the module docstring)."""

    def __init__(self, snapshot: str, root: str | None = None, format: str | None = None, name: str | None = None,
                 verify: bool = True, kind: str | None = None) -> None:
        from vision.curation.export import read_manifest

        self.root = resolve_snapshot(snapshot, root)
        self.manifest = read_manifest(self.root)
        self.snapshot = str(self.manifest.get("name") or self.root.name)
        self.snapshot_id = str(self.manifest.get("snapshot_id"))
        have = list(self.manifest.get("formats") or [])
        if format is None:
            format = next((f for f in ("coco", "yolo", "voc", "classes", "market") if f in have), None)
        if format not in have:
            raise DataError(f"snapshot {self.root}: no {format!r} export (it has {have}); set data.format to one of "
                            f"them")
        self.format = format
        self.name = name or self.snapshot
        self.verify = verify
        self._kind = kind
        self._verified = False
        self._licences: list[str] = []

    @property
    def task(self) -> str:
        return "detection" if self.format in DETECTION else "reid" if self.format == "market" else "classification"

    @property
    def classes(self) -> list[str]:
        """The label schema's classes (detections, or image labels)."""
        schema = self.manifest.get("label_schema") or {}
        if self.format in DETECTION:
            return list(schema.get("classes") or [])
        block = schema.get("image_labels") or schema
        return list(block.get("classes") or [])

    @property
    def kind(self) -> str:
        """Given, else the snapshot's: ``synthetic`` / ``refined`` only when every sample is; else ``real``."""
        if self._kind:
            return self._kind
        kinds = set((self.manifest.get("counts") or {}).get("per_kind") or {})
        return kinds.pop() if len(kinds) == 1 and kinds <= {"synthetic", "refined"} else "real"

    def check(self) -> dict[str, Any]:
        """Re-hash every file against the manifest (once); DataError naming what changed."""
        from vision.curation.export import verify_snapshot

        if self.verify and not self._verified:
            try:
                verify_snapshot(self.root)
            except DataError as e:
                raise DataError(f"{e}\nSnapshots are immutable: refusing to train on a modified snapshot "
                                f"({self.root}); export a new one with python -m vision.curate "
                                f"action=export-snapshot") from None
            self._verified = True
        return self.manifest

    def load(self) -> list:
        from vision.data import detection as det

        self.check()
        folder = self.root / self.format
        if self.format == "coco":
            samples = list(det.read_coco(folder / "annotations.json", source=self.name))
        elif self.format == "yolo":
            samples = list(det.read_yolo(folder, self.classes, source=self.name))
        elif self.format == "voc":
            samples = list(det.read_voc(folder / "images", folder / "annotations", source=self.name,
                                        missing_annotation="empty"))
        elif self.format == "classes":
            from vision.data.readers import ImageFolderSource

            samples = ImageFolderSource(str(folder), name=self.name).load()
        else:
            from vision.data.reid import MarketSource

            samples = MarketSource(str(folder), name=self.name, verify_checksums=False).load()
        self._licences = sorted({str(s.meta.get("licence", "unknown")) for s in samples})
        return samples

    def card(self) -> dict[str, Any]:
        m = self.manifest
        licence = self._licences[0] if len(self._licences) == 1 else (
            "; ".join(self._licences) if self._licences else "see the snapshot's samples")
        return {"name": self.name, "task": self.task, "format": f"snapshot/{self.format}", "source": str(self.root),
                "licence": licence, "licences": self._licences, "snapshot": self.snapshot,
                "snapshot_id": self.snapshot_id, "snapshot_created_at": m.get("created_at"),
                "dataset": m.get("dataset"), "parent": m.get("parent"), "view": (m.get("view") or {}).get("repr"),
                "counts": m.get("counts"), "verified": self._verified, "_root": str(self.root)}


class _Unavailable:
    """Stands for a snapshot that cannot be opened, so the error surfaces in ``setup()`` (as a clean
    DataError of the entry point) rather than inside Hydra's instantiation."""

    kind = "real"

    def __init__(self, snapshot: str, error: DataError) -> None:
        self.name = self.snapshot = str(snapshot).replace("/", "_") or "snapshot"
        self.snapshot_id = None
        self.root = Path(str(snapshot))
        self.format = None
        self.error = error
        self.classes: list[str] = []

    def load(self) -> list:
        raise self.error

    def card(self) -> dict[str, Any]:
        return {"name": self.name, "licence": "unknown", "error": str(self.error)}


def _open(snapshot: str, root: str | None, format: str, verify: bool, kind: str | None):
    try:
        return SnapshotSource(snapshot, root, format, verify=verify, kind=kind)
    except DataError as e:
        return _Unavailable(snapshot, e)


def _snapshot_splits(samples: Sequence[Any], mode: str, what: str) -> dict[str, list] | None:
    """The snapshot's own per-sample ``split`` (meta), or None to let the recipe split."""
    if mode == "ignore":
        return None
    values = [s.meta.get("split") for s in samples]
    bad = Counter(str(v) for v in values if v not in split_mod.SPLITS)
    if bad:
        if mode == "require":
            raise DataError(f"{what}: data.snapshot_splits=require but {sum(bad.values())} sample(s) have no "
                            f"train/val/test split (values {dict(bad)}); set the split field while curating")
        return None
    out: dict[str, list] = {k: [] for k in split_mod.SPLITS}
    for s, v in zip(samples, values):
        out[v].append(s)
    out = {k: sorted(v, key=lambda s: s.key) for k, v in out.items()}
    try:
        split_mod.check_nonempty(out, len(samples))
    except DataError as e:
        raise DataError(f"{what}: the snapshot's own {e} (give samples that split while curating, or "
                        f"data.snapshot_splits=ignore to split by data.split)") from None
    return out


class SnapshotDetectionDataModule(DetectionDataModule):
    """:class:`DetectionDataModule` on one snapshot (``data.snapshot=NAME``); every other option as usual."""

    def __init__(self, snapshot: str, snapshots_root: str | None = None, format: str = "coco",
                 classes: Sequence[str] | None = None, verify: bool = True, snapshot_splits: str = "auto",
                 kind: str | None = None, **kwargs: Any) -> None:
        if format not in DETECTION:
            raise DataError(f"data.format={format!r}: detection trains on a coco, yolo or voc export")
        if snapshot_splits not in SNAPSHOT_SPLITS:
            raise DataError(f"data.snapshot_splits must be one of {SNAPSHOT_SPLITS}, got {snapshot_splits!r}")
        src = _open(snapshot, snapshots_root, format, verify, kind)
        self.snapshot_source = src
        self.snapshot_splits = snapshot_splits
        super().__init__(sources={src.name: src}, classes=list(classes) if classes else src.classes or ["?"],
                         **kwargs)

    def _split(self, samples):
        out = _snapshot_splits(samples, self.snapshot_splits, f"snapshot {self.snapshot_source.root}")
        return out if out is not None else super()._split(samples)

    def summary(self) -> dict[str, Any]:
        s = self.snapshot_source
        return {**super().summary(), "snapshot": {"name": s.snapshot, "snapshot_id": s.snapshot_id,
                                                  "path": str(s.root), "format": s.format}}


class SnapshotClassificationDataModule(ClassificationDataModule):
    """:class:`ClassificationDataModule` on a snapshot's class folders (``format: classes``)."""

    def __init__(self, snapshot: str, snapshots_root: str | None = None, format: str = "classes",
                 classes: Sequence[str] | None = None, verify: bool = True, snapshot_splits: str = "auto",
                 kind: str | None = None, sources: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if format != "classes":
            raise DataError(f"data.format={format!r}: classification trains on a snapshot's classes export")
        if snapshot_splits not in SNAPSHOT_SPLITS:
            raise DataError(f"data.snapshot_splits must be one of {SNAPSHOT_SPLITS}, got {snapshot_splits!r}")
        src = _open(snapshot, snapshots_root, format, verify, kind)
        self.snapshot_source = src
        self.snapshot_splits = snapshot_splits
        super().__init__(sources={src.name: src}, classes=list(classes) if classes else None, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        if self.splits or self._assignment is not None or self.split_file:
            return super().setup(stage)
        samples = self.snapshot_source.load()
        own = _snapshot_splits(samples, self.snapshot_splits, f"snapshot {self.snapshot_source.root}")
        if own is None:
            return super().setup(stage)
        self._assignment = split_mod.keys_of(own)  # applied by the parent's setup (a saved assignment)
        super().setup(stage)

    def summary(self) -> dict[str, Any]:
        s = self.snapshot_source
        return {**super().summary(), "snapshot": {"name": s.snapshot, "snapshot_id": s.snapshot_id,
                                                  "path": str(s.root), "format": s.format}}
