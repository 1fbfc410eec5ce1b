"""Readers for classification data: class folders and NEU-DET (class from the file name + VOC xml).

Every reader checks its input up front and raises one DataError listing each bad file and why,
so a training run never starts on data it would later choke on.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import yaml

from vision.data import cards as cards_mod
from vision.data.samples import Sample
from vision.errors import DataError
from vision.runtime.preprocess import IMAGE_EXTENSIONS, ImageReadError, read_image



def _require_dir(root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(f"{root}: {what} folder not found (check data paths, e.g. paths.data_root)")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder for {what}, found a file")


def _raise_problems(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:25])
        more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
        raise DataError(f"{len(problems)} problem(s) in {what}:\n  {shown}{more}")


def check_images(samples: Sequence[Sample]) -> None:
    """Decode every image completely; raise one DataError naming each corrupt/truncated file."""
    problems = []
    for s in samples:
        try:
            read_image(s.path)
        except ImageReadError as e:
            problems.append(str(e))
    _raise_problems(problems, "the images")


class ImageFolderSource:
    """``root/<class>/<image>`` folders. Reads ``root/card.yaml`` and ``root/provenance.jsonl`` if present."""

    def __init__(self, root: str, name: str | None = None, classes: list[str] | None = None,
                 validate_images: bool = True, licence: str | None = None, kind: str | None = None) -> None:
        if kind not in (None, "real", "synthetic", "refined"):
            raise DataError(f"{root}: kind must be real, synthetic or refined, got {kind!r}")
        self._kind = kind
        self._card: dict[str, Any] | None = None
        self.root = Path(root).expanduser()
        self.name = name or self.root.name
        self.classes = list(classes) if classes else None
        self.validate_images = validate_images
        self.licence = licence

    def load(self) -> list[Sample]:
        _require_dir(self.root, f"image-folder dataset {self.name!r}")
        provenance = self._provenance()
        samples, problems = [], []
        licence = self._licence()
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise DataError(f"{self.root}: no class folders found (expected {self.root}/<class>/<image>)")
        for d in class_dirs:
            if self.classes is not None and d.name not in self.classes:
                problems.append(f"{d}: unknown label {d.name!r} (configured classes: {self.classes})")
                continue
            files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
            for p in files:
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    problems.append(f"{p}: not an image file (extension {p.suffix!r})")
                    continue
                rel = p.relative_to(self.root).as_posix()
                meta = dict(provenance.get(rel, {}))
                meta.setdefault("licence", licence)
                samples.append(Sample(str(p.resolve()), d.name, self.name, rel, meta))
        if self.classes is not None:
            found = {s.label for s in samples}
            for c in self.classes:
                if c not in found:
                    problems.append(f"{self.root / c}: configured class {c!r} has no images")
        _raise_problems(problems, f"image-folder dataset {self.root}")
        if not samples:
            raise DataError(f"{self.root}: no images found in the class folders")
        if self.validate_images:
            check_images(samples)
        return samples

    @property
    def kind(self) -> str:
        """Given, or from the folder's card: generated data (licence 'generated' / real: false) is synthetic."""
        if self._kind:
            return self._kind
        card = self._card_file() or {}
        return "synthetic" if card.get("licence") == "generated" or card.get("real") is False else "real"

    def _provenance(self) -> dict[str, dict[str, Any]]:
        path = self.root / "provenance.jsonl"
        if not path.is_file():
            return {}
        out = {}
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    out[rec["file"]] = {k: v for k, v in rec.items() if k != "file"}
                except (json.JSONDecodeError, KeyError) as e:
                    raise DataError(f"{path}:{lineno}: bad provenance record ({e})") from e
        return out

    def _card_file(self) -> dict[str, Any] | None:
        """``root/card.yaml``, read once (a folder generated later is picked up: absence is not cached)."""
        if self._card is None:
            path = self.root / "card.yaml"
            if path.is_file():
                try:
                    self._card = yaml.safe_load(path.read_text()) or {}
                except yaml.YAMLError as e:
                    raise DataError(f"{path}: unreadable dataset card ({e})") from e
        return self._card

    def _licence(self) -> str:
        if self.licence:
            return self.licence
        card = self._card_file() or {}
        return str(card.get("licence", "unknown"))

    def card(self) -> dict[str, Any]:
        card = dict(self._card_file() or {})
        card.setdefault("name", self.name)
        card.setdefault("task", "classification")
        card.setdefault("format", "class folders")
        card.setdefault("source", str(self.root))
        card["licence"] = self._licence()
        card["_root"] = str(self.root)
        return card


class NEUDETSource:
    """NEU surface defect database: ``IMAGES/<class>_<n>.jpg`` with ``ANNOTATIONS/<class>_<n>.xml``.

    The class comes from the file-name prefix; the Pascal VOC file alongside is parsed and checked
    (readable, boxes inside the image), and its box count is kept in the sample's metadata.
    """

    CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
    kind = "real"

    def __init__(self, root: str, card: str | None = "neu_det", classes: list[str] | None = None,
                 require_annotations: bool = True, validate_images: bool = True,
                 verify_checksums: bool = True, name: str = "neu_det") -> None:
        self.root = Path(root).expanduser()
        self.card_name = card
        self.classes = list(classes) if classes else list(self.CLASSES)
        self.require_annotations = require_annotations
        self.validate_images = validate_images
        self.verify_checksums = verify_checksums
        self.name = name

    def load(self) -> list[Sample]:
        _require_dir(self.root, "NEU-DET dataset")
        images_dir = self.root / "IMAGES"
        _require_dir(images_dir, "NEU-DET IMAGES")
        if self.verify_checksums and self.card_name:
            cards_mod.verify(cards_mod.load_card(self.card_name), self.root)
        licence = self.card().get("licence", "unknown")
        samples, problems = [], []
        for p in sorted(images_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                problems.append(f"{p}: not an image file (extension {p.suffix!r})")
                continue
            label, _, num = p.stem.rpartition("_")
            if not label or not num.isdigit():
                problems.append(f"{p}: file name does not parse as <class>_<number>")
                continue
            if label not in self.classes:
                problems.append(f"{p}: unknown label {label!r} (known: {', '.join(self.classes)})")
                continue
            meta: dict[str, Any] = {"licence": licence}
            xml = self.root / "ANNOTATIONS" / f"{p.stem}.xml"
            if xml.is_file():
                try:
                    meta["num_boxes"] = _check_voc(xml)
                except DataError as e:
                    problems.append(str(e))
                    continue
            elif self.require_annotations:
                problems.append(f"{xml}: annotation file missing for {p.name}")
                continue
            samples.append(Sample(str(p.resolve()), label, self.name, p.relative_to(self.root).as_posix(), meta))
        _raise_problems(problems, f"NEU-DET dataset {self.root}")
        if not samples:
            raise DataError(f"{images_dir}: no images found")
        if self.validate_images:
            check_images(samples)
        return samples

    def card(self) -> dict[str, Any]:
        if self.card_name:
            card = cards_mod.load_card(self.card_name)
        else:
            card = {"name": self.name, "task": "classification", "source": "NEU-DET", "licence": "unknown",
                    "format": "NEU-DET"}
        card["_root"] = str(self.root)
        return card


def _check_voc(path: Path) -> int:
    """Parse a Pascal VOC file; return its number of boxes or raise DataError naming the problem."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{path}: unreadable VOC xml ({e})") from e
    size = root.find("size")
    try:
        w = int(float(size.findtext("width")))  # type: ignore[union-attr, arg-type]
        h = int(float(size.findtext("height")))  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{path}: VOC <size> missing or not numeric") from e
    n = 0
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore
        except (AttributeError, TypeError, ValueError) as e:
            raise DataError(f"{path}: object #{n + 1} has a missing or non-numeric <bndbox>") from e
        # VOC is 1-based inclusive: allow coordinates 0..size
        if not (0 <= x1 < x2 <= w + 1 and 0 <= y1 < y2 <= h + 1):
            raise DataError(f"{path}: object #{n + 1} box {x1, y1, x2, y2} is outside the {w}x{h} image or degenerate")
        n += 1
    return n
