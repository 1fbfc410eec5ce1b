"""Detection data sources for the recipes: MOT sequences and COCO/YOLO/VOC sets on disk.

Each wraps a reader of :mod:`vision.data.detection` and describes itself with a dataset card (from
``datasets/<card>.yaml`` when named, with checksums verified). ``policy`` is the readers' bad-input
policy: ``error`` (default) stops on the first bad file/line with its name; ``skip`` drops bad
records and writes a report beside the run (``report``), never silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from vision.data import cards as cards_mod
from vision.data.boxes import Box, DetectionSample
from vision.errors import DataError


def _relabel(samples: Sequence[DetectionSample], label_map: Mapping[str, str | None] | None,
             meta: Mapping[str, Any]) -> list[DetectionSample]:
    out = []
    for s in samples:
        boxes = s.boxes
        if label_map:
            boxes = [Box(b.x1, b.y1, b.x2, b.y2, label_map.get(b.label, b.label), b.identity, b.attrs)
                     for b in s.boxes if label_map.get(b.label, b.label) is not None]
        out.append(DetectionSample(s.path, s.width, s.height, boxes, s.source, s.relpath, {**s.meta, **meta}))
    return out


class _CardMixin:
    name: str
    card_name: str | None
    root: Path
    kind: str = "real"
    verify_checksums: bool = False

    def card(self) -> dict[str, Any]:
        if self.card_name:
            card = cards_mod.load_card(self.card_name)
        else:
            card = {"name": self.name, "task": "detection", "source": str(self.root), "licence": "unknown"}
        card["_root"] = str(self.root)
        return card

    def _verify(self) -> None:
        if self.verify_checksums and self.card_name:
            cards_mod.verify(cards_mod.load_card(self.card_name), self.root)

    def _licence(self) -> str:
        return str(self.card().get("licence", "unknown"))


class MOTSource(_CardMixin):
    """A MOTChallenge-style sequence folder (``img1/`` or ``img/`` frames + ``gt/gt.txt``)."""

    def __init__(self, root: str, name: str | None = None, card: str | None = None, label: str = "person",
                 label_map: Mapping[str, str | None] | None = None, frames_glob: str | None = None,
                 policy: str = "error", report: str | None = None, verify_checksums: bool = True,
                 kind: str = "real") -> None:
        self.root = Path(root).expanduser()
        self.name = name or self.root.name
        self.card_name = card
        self.label = label
        self.label_map = dict(label_map or {})
        self.frames_glob = frames_glob
        self.policy = policy
        self.report = report
        self.verify_checksums = verify_checksums
        self.kind = kind

    def load(self) -> list[DetectionSample]:
        from vision.data.detection import read_mot

        if not self.root.is_dir():
            raise DataError(f"{self.root}: MOT sequence folder not found (check paths.data_root)")
        self._verify()
        samples = read_mot(self.root, self.frames_glob, source=self.name, label=self.label, policy=self.policy,
                           report=self.report)
        for s in samples:  # MOT17/20 ground truth: conf 0 marks entries not to train or evaluate on
            if s.meta.get("mot_columns") == 9:
                for b in s.boxes:
                    if b.attrs.get("conf") == 0:
                        b.attrs["ignore"] = True
        return _relabel(samples, self.label_map, {"licence": self._licence(), "kind": self.kind,
                                                  "sequence": self.name})


class COCOSource(_CardMixin):
    """A COCO detection JSON with its images."""

    def __init__(self, annotations: str, images_root: str | None = None, name: str | None = None,
                 card: str | None = None, label_map: Mapping[str, str | None] | None = None, policy: str = "error",
                 report: str | None = None, clip_outside: bool = False, verify_checksums: bool = True,
                 kind: str = "real") -> None:
        self.annotations = Path(annotations).expanduser()
        self.root = Path(images_root).expanduser() if images_root else self.annotations.parent
        self.images_root = images_root
        self.name = name or self.annotations.parent.name
        self.card_name = card
        self.label_map = dict(label_map or {})
        self.policy = policy
        self.report = report
        self.clip_outside = clip_outside
        self.verify_checksums = verify_checksums
        self.kind = kind

    def load(self) -> list[DetectionSample]:
        from vision.data.detection import read_coco

        self._verify()
        samples = read_coco(self.annotations, self.images_root, source=self.name, policy=self.policy,
                            report=self.report, clip_outside=self.clip_outside)
        return _relabel(samples, self.label_map, {"licence": self._licence(), "kind": self.kind})


class YOLOSource(_CardMixin):
    """A YOLO txt dataset (``images/`` + ``labels/``) with its class names."""

    def __init__(self, root: str, classes: Sequence[str], name: str | None = None, card: str | None = None,
                 label_map: Mapping[str, str | None] | None = None, policy: str = "error",
                 report: str | None = None, verify_checksums: bool = True, kind: str = "real") -> None:
        self.root = Path(root).expanduser()
        self.classes = list(classes)
        self.name = name or self.root.name
        self.card_name = card
        self.label_map = dict(label_map or {})
        self.policy = policy
        self.report = report
        self.verify_checksums = verify_checksums
        self.kind = kind

    def load(self) -> list[DetectionSample]:
        from vision.data.detection import read_yolo

        self._verify()
        samples = read_yolo(self.root, self.classes, source=self.name, policy=self.policy, report=self.report)
        return _relabel(samples, self.label_map, {"licence": self._licence(), "kind": self.kind})


class VOCSource(_CardMixin):
    """Pascal VOC: an images folder and an xml annotations folder."""

    def __init__(self, images: str, annotations: str, labels: Sequence[str] | None = None, name: str | None = None,
                 card: str | None = None, label_map: Mapping[str, str | None] | None = None, policy: str = "error",
                 report: str | None = None, verify_checksums: bool = True, kind: str = "real") -> None:
        self.root = Path(images).expanduser()
        self.annotations = Path(annotations).expanduser()
        self.labels = list(labels) if labels else None
        self.name = name or self.root.parent.name
        self.card_name = card
        self.label_map = dict(label_map or {})
        self.policy = policy
        self.report = report
        self.verify_checksums = verify_checksums
        self.kind = kind

    def load(self) -> list[DetectionSample]:
        from vision.data.detection import read_voc

        self._verify()
        kw: dict[str, Any] = {"source": self.name, "policy": self.policy, "report": self.report}
        if self.labels:
            kw["labels"] = self.labels
        samples = read_voc(self.root, self.annotations, **kw)
        return _relabel(samples, self.label_map, {"licence": self._licence(), "kind": self.kind})
