"""Person re-identification data: readers, identity splits, the P x K sampler and the datamodule.

Readers (all are data sources, see :class:`vision.data.samples.Source`):

``MarketSource``
    The Market-1501 layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` with file names
    ``{id}_c{cam}s{seq}_{frame}_{n}.jpg``. Id ``-1`` is *junk* (ignored by the evaluation, never trained on),
    id ``0000`` a *distractor* (gallery only, never matches a query). The scene engine's re-id output
    (``synthetic.scene.write_reid``) is the same layout plus ``card.yaml`` and ``provenance.jsonl``, which
    are read too (a card with licence ``generated`` makes the source synthetic).
``MarsSource``
    The MARS layout: ``bbox_train/<id>/<id>C<cam>T<tracklet>F<frame>.jpg`` (and ``bbox_test/``); the
    folder ``00-1`` / id ``-1`` is junk, ``0000`` distractors. ``max_per_tracklet`` keeps evenly spaced frames.
``IdentityFolderSource``
    A generic ``root/<identity>/<camera>/<image>`` layout.

Each sample is a :class:`~vision.data.samples.Sample` whose ``label`` is the identity namespaced by its
source (``"market1501_mini:0005"``), so identities of different sources (real and synthetic) never
collide; ``namespace=`` makes two sources share identities on purpose (MARS and Market-1501 number the same
persons alike). ``meta`` records ``identity`` (the raw id), ``camera``, ``kind``, ``role`` (the dataset's
own split: train / query / gallery / test, or None), ``junk``, ``distractor``, and the provenance.

Bad input: a file name that does not parse, an empty (0-byte) file, an undecodable image or a crop with
no pixels is an error naming the file (``policy="error"``, the default: every problem in one DataError)
or is skipped and listed in the source's ``report`` (``policy="skip"``); nothing is dropped silently.

Splits are by identity, never by image (:func:`split_identities`): an identity's role comes from the
dataset's own split when it has one (Market: train vs query + gallery), otherwise from a seeded identity
split; validation identities are held out of the training identities the same way.
"""
from __future__ import annotations

import json
import logging
import re
import zlib
from collections import defaultdict, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from vision.data import augment as aug
from vision.data import cards as cards_mod
from vision.data.samples import load_sources, Sample, Source
from vision.data.sampling import check_mix, MixedBatchSampler, mix_seed
from vision.errors import DataError
from vision.runtime.preprocess import IMAGE_EXTENSIONS, ImageReadError, PreprocessSpec, normalize, read_image, \
    resize_image

log = logging.getLogger(__name__)

POLICIES = ("error", "skip")
KINDS = ("real", "synthetic", "refined")
TEST_ROLES = ("query", "gallery", "test")
SPLIT_NAMES = ("train", "val_query", "val_gallery", "query", "gallery")
JUNK_ID = "-1"
DISTRACTOR_ID = "0000"
IGNORED_FILES = ("Thumbs.db", ".DS_Store", "card.yaml", "provenance.jsonl", "README.md", "readme.txt")
MARKET_FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
MARKET_RE = re.compile(r"^(-1|\d+)_c(\d+)s(\d+)_(\d+)_(\d+)$")
MARS_FOLDERS = {"bbox_train": "train", "bbox_test": "test"}
MARS_RE = re.compile(r"^(\d\d-1|-1|\d+)C(\d+)T(\d+)F(\d+)$")


def parse_market(name: str) -> dict[str, Any]:
    """``{identity, camera, sequence, frame, box}`` of a Market-1501 file name; ValueError if it does not parse."""
    m = MARKET_RE.match(Path(name).stem)
    if not m:
        raise ValueError("file name does not parse as Market-1501 '{id}_c{cam}s{seq}_{frame}_{n}.jpg'")
    pid = int(m.group(1))
    return {"identity": JUNK_ID if pid < 0 else f"{pid:04d}", "camera": int(m.group(2)), "sequence": int(m.group(3)),
            "frame": int(m.group(4)), "box": int(m.group(5))}


def parse_mars(name: str) -> dict[str, Any]:
    """``{identity, camera, tracklet, frame}`` of a MARS file name; ValueError if it does not parse."""
    m = MARS_RE.match(Path(name).stem)
    if not m:
        raise ValueError("file name does not parse as MARS '<id>C<cam>T<tracklet>F<frame>.jpg'")
    raw = m.group(1)
    pid = -1 if raw.endswith("-1") else int(raw)
    return {"identity": JUNK_ID if pid < 0 else f"{pid:04d}", "camera": int(m.group(2)),
            "tracklet": int(m.group(3)), "frame": int(m.group(4))}


# -- read report -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class ReadReport:
    """What a reader skipped (policy ``skip``), ignored (non-image files) or warns about."""

    def __init__(self, source: str, policy: str) -> None:
        self.source, self.policy = source, policy
        self.skipped: list[Problem] = []
        self.ignored: list[Problem] = []
        self.warnings: list[str] = []
        self.counts: dict[str, int] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "policy": self.policy, "counts": dict(self.counts),
                "skipped_count": len(self.skipped), "skipped": [asdict(p) for p in self.skipped],
                "ignored": [asdict(p) for p in self.ignored], "warnings": list(self.warnings)}


class _Problems:
    def __init__(self, policy: str, what: str) -> None:
        if policy not in POLICIES:
            raise DataError(f"{what}: policy must be one of {POLICIES}, got {policy!r}")
        self.policy, self.what = policy, what
        self.items: list[Problem] = []

    def add(self, path: Path | str, reason: str) -> None:
        self.items.append(Problem(str(path), reason))

    def finish(self, report: ReadReport) -> None:
        if self.policy == "error" and self.items:
            shown = "\n  ".join(str(p) for p in self.items[:25])
            more = f"\n  ... and {len(self.items) - 25} more" if len(self.items) > 25 else ""
            raise DataError(f"{len(self.items)} problem(s) in {self.what}:\n  {shown}{more}\n"
                            f"(policy='skip' skips these files and lists them in the source's report)")
        report.skipped += self.items
        for p in self.items:
            log.warning("%s: skipped %s", self.what, p)


def check_crop(path: Path, decode: bool) -> str | None:
    """None when the crop is usable, else why not (empty file, undecodable, no pixels)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"unreadable ({e})"
    if size == 0:
        return "empty crop (0-byte file)"
    try:
        with Image.open(path) as im:
            w, h = im.size
            if decode:
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"corrupt or truncated image ({e})"
    if w < 2 or h < 2:
        return f"empty crop ({w}x{h} pixels)"
    return None


# -- readers -----------------------------------------------------------------------------------------
class _ReidReader:
    """Shared machinery: policy, kind, namespace, card.yaml / provenance.jsonl, image checks."""

    task_format = "reid"

    def __init__(self, root: str, name: str, card: str | None, verify_checksums: bool, policy: str,
                 validate_images: bool, kind: str | None, namespace: str | None, licence: str | None) -> None:
        if kind not in (None, *KINDS):
            raise DataError(f"{root}: kind must be one of {KINDS}, got {kind!r}")
        self.root = Path(root).expanduser()
        self.name = name
        self.card_name = card
        self.verify_checksums = verify_checksums
        self.policy = policy
        self.validate_images = validate_images
        self._kind = kind
        self.namespace = namespace
        self.licence = licence
        self.report = ReadReport(name, policy)
        self._card_cache: dict[str, Any] | None = None
        self._load_kind = kind or "real"
        _Problems(policy, str(self.root))  # fail on a bad policy now

    # card / kind ------------------------------------------------------------------------------
    def _folder_card(self) -> dict[str, Any]:
        if self._card_cache is None:
            path = self.root / "card.yaml"
            self._card_cache = {}
            if path.is_file():
                try:
                    self._card_cache = yaml.safe_load(path.read_text()) or {}
                except yaml.YAMLError as e:
                    raise DataError(f"{path}: unreadable dataset card ({e})") from e
        return self._card_cache

    @property
    def kind(self) -> str:
        """Given, or from the card: generated data (licence 'generated' / real: false) is synthetic."""
        if self._kind:
            return self._kind
        if self.card_name:
            card = cards_mod.load_card(self.card_name)
        elif self.root.is_dir():
            card = self._folder_card()
        else:
            return "real"  # not there (yet): not cached, a folder generated later is read again
        self._kind = "synthetic" if card.get("licence") == "generated" or card.get("real") is False else "real"
        return self._kind

    def card(self) -> dict[str, Any]:
        if self.card_name:
            card = cards_mod.load_card(self.card_name)
        else:
            card = dict(self._folder_card() if self.root.is_dir() else {})
            card.setdefault("task", "reid")
            card.setdefault("format", self.task_format)
            card.setdefault("source", str(self.root))
            card["licence"] = self._licence(card)
        card["name"] = self.name
        card["_root"] = str(self.root)
        card["read_report"] = self.report.to_dict()
        return card

    def _licence(self, card: dict[str, Any] | None = None) -> str:
        if self.licence:
            return self.licence
        if card is None:
            card = cards_mod.load_card(self.card_name) if self.card_name else self._folder_card()
        return str(card.get("licence", "unknown"))

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
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DataError(f"{path}:{lineno}: bad provenance record ({e})") from e
        return out

    # reading ------------------------------------------------------------------------------------
    def _require_root(self, what: str) -> None:
        self.report = ReadReport(self.name, self.policy)
        if not self.root.exists():
            raise DataError(f"{self.root}: {what} folder not found (check data paths, e.g. paths.data_root)")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: expected a folder for {what}, found a file")
        if self.verify_checksums and self.card_name:
            cards_mod.verify(cards_mod.load_card(self.card_name), self.root)
        self._load_kind = self.kind

    def _files(self, folder: Path, problems: _Problems, recursive: bool = False) -> list[Path]:
        out = []
        for p in sorted(folder.rglob("*") if recursive else folder.iterdir()):
            if p.is_dir():
                continue
            if p.name.startswith(".") or p.name in IGNORED_FILES:
                self.report.ignored.append(Problem(str(p), "not a crop (metadata / system file)"))
                continue
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                problems.add(p, f"not an image file (extension {p.suffix!r})")
                continue
            out.append(p)
        return out

    def _sample(self, path: Path, identity: str, camera: Any, role: str | None, provenance: Mapping[str, Any],
                licence: str, **extra: Any) -> Sample:
        rel = path.relative_to(self.root).as_posix()
        ns = self.namespace or self.name
        meta: dict[str, Any] = dict(provenance.get(rel, {}))
        meta.update(extra)
        meta.update({"identity": identity, "camera": camera, "role": role, "kind": self._load_kind,
                     "junk": identity == JUNK_ID, "distractor": identity == DISTRACTOR_ID})
        meta.setdefault("licence", licence)
        return Sample(str(path.resolve()), f"{ns}:{identity}", self.name, rel, meta)

    def _finish(self, samples: list[Sample], problems: _Problems) -> list[Sample]:
        good = []
        for s in samples:
            why = check_crop(Path(s.path), decode=self.validate_images)
            if why:
                problems.add(s.path, why)
            else:
                good.append(s)
        problems.finish(self.report)
        if not good:
            raise DataError(f"{self.root}: no usable re-id crops found")
        self.report.counts = {"images": len(good), "identities": len({s.label for s in good}),
                              "cameras": len({s.meta["camera"] for s in good}),
                              "junk": sum(s.meta["junk"] for s in good),
                              "distractors": sum(s.meta["distractor"] for s in good)}
        return good


class MarketSource(_ReidReader):
    """Market-1501 layout (also the scene engine's ``write_reid`` output, with its card and provenance)."""

    task_format = "Market-1501"

    def __init__(self, root: str, name: str = "market1501", card: str | None = None, verify_checksums: bool = True,
                 policy: str = "error", validate_images: bool = True, kind: str | None = None,
                 namespace: str | None = None, licence: str | None = None) -> None:
        super().__init__(root, name, card, verify_checksums, policy, validate_images, kind, namespace, licence)

    def load(self) -> list[Sample]:
        self._require_root("Market-1501 dataset")
        present = {f: r for f, r in MARKET_FOLDERS.items() if (self.root / f).is_dir()}
        if not present:
            raise DataError(f"{self.root}: no Market-1501 folders (expected {', '.join(MARKET_FOLDERS)})")
        if ("query" in present) != ("bounding_box_test" in present):
            have, lack = ("query", "bounding_box_test") if "query" in present else ("bounding_box_test", "query")
            raise DataError(f"{self.root}: has {have}/ but no {lack}/ (a query set needs its gallery and back)")
        problems = _Problems(self.policy, f"Market-1501 dataset {self.root}")
        provenance = self._provenance()
        licence = self._licence()
        samples = []
        for folder, role in present.items():
            for p in self._files(self.root / folder, problems):
                try:
                    info = parse_market(p.name)
                except ValueError as e:
                    problems.add(p, str(e))
                    continue
                if role == "query" and info["identity"] in (JUNK_ID, DISTRACTOR_ID):
                    problems.add(p, f"a query image of the {'junk' if info['identity'] == JUNK_ID else 'distractor'} "
                                    f"identity {info['identity']} (queries must be real identities)")
                    continue
                samples.append(self._sample(p, info["identity"], info["camera"], role, provenance, licence,
                                            sequence=info["sequence"], frame=info["frame"], box=info["box"]))
        return self._finish(samples, problems)


class MarsSource(_ReidReader):
    """MARS layout: ``bbox_train/<id>/<id>C<cam>T<tracklet>F<frame>.jpg`` (and ``bbox_test/``)."""

    task_format = "MARS"

    def __init__(self, root: str, name: str = "mars", card: str | None = None, verify_checksums: bool = True,
                 policy: str = "error", validate_images: bool = True, kind: str | None = None,
                 namespace: str | None = None, licence: str | None = None,
                 max_per_tracklet: int | None = None) -> None:
        super().__init__(root, name, card, verify_checksums, policy, validate_images, kind, namespace, licence)
        if max_per_tracklet is not None and max_per_tracklet < 1:
            raise DataError(f"{root}: max_per_tracklet must be >= 1 or null, got {max_per_tracklet}")
        self.max_per_tracklet = max_per_tracklet

    def load(self) -> list[Sample]:
        self._require_root("MARS dataset")
        present = {f: r for f, r in MARS_FOLDERS.items() if (self.root / f).is_dir()}
        if not present:
            raise DataError(f"{self.root}: no MARS folders (expected {' and/or '.join(MARS_FOLDERS)})")
        problems = _Problems(self.policy, f"MARS dataset {self.root}")
        provenance = self._provenance()
        licence = self._licence()
        samples = []
        for folder, role in present.items():
            for id_dir in sorted(d for d in (self.root / folder).iterdir() if d.is_dir()):
                tracklets: dict[tuple[int, int], list[tuple[Path, dict]]] = defaultdict(list)
                for p in self._files(id_dir, problems):
                    try:
                        info = parse_mars(p.name)
                    except ValueError as e:
                        problems.add(p, str(e))
                        continue
                    folder_id = JUNK_ID if id_dir.name.endswith("-1") else id_dir.name
                    if folder_id != info["identity"]:
                        problems.add(p, f"identity {info['identity']} in the file name but the folder is {id_dir.name}")
                        continue
                    tracklets[(info["camera"], info["tracklet"])].append((p, info))
                for (cam, trk), items in sorted(tracklets.items()):
                    items.sort(key=lambda t: t[1]["frame"])
                    if self.max_per_tracklet and len(items) > self.max_per_tracklet:
                        keep = np.unique(np.linspace(0, len(items) - 1, self.max_per_tracklet).round().astype(int))
                        self.report.counts["frames_not_used"] = (self.report.counts.get("frames_not_used", 0)
                                                                 + len(items) - len(keep))
                        items = [items[i] for i in keep]
                    for p, info in items:
                        samples.append(self._sample(p, info["identity"], cam, role, provenance, licence,
                                                    tracklet=trk, frame=info["frame"]))
        not_used = self.report.counts.get("frames_not_used", 0)
        out = self._finish(samples, problems)
        if not_used:
            self.report.counts["frames_not_used"] = not_used
            self.report.warnings.append(f"max_per_tracklet={self.max_per_tracklet}: {not_used} frames not used")
        return out


class IdentityFolderSource(_ReidReader):
    """Generic ``root/<identity>/<camera>/<image>`` folders (identity and camera are the folder names)."""

    task_format = "identity/camera/image folders"

    def __init__(self, root: str, name: str = "reid_folder", card: str | None = None, verify_checksums: bool = True,
                 policy: str = "error", validate_images: bool = True, kind: str | None = None,
                 namespace: str | None = None, licence: str | None = None) -> None:
        super().__init__(root, name, card, verify_checksums, policy, validate_images, kind, namespace, licence)

    def load(self) -> list[Sample]:
        self._require_root("identity-folder dataset")
        problems = _Problems(self.policy, f"identity-folder dataset {self.root}")
        provenance = self._provenance()
        licence = self._licence()
        samples = []
        id_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not id_dirs:
            raise DataError(f"{self.root}: no identity folders (expected {self.root}/<identity>/<camera>/<image>)")
        for p in sorted(self.root.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                problems.add(p, "image directly under the root: expected <identity>/<camera>/<image>")
        for id_dir in id_dirs:
            for p in self._files(id_dir, problems, recursive=True):
                parts = p.relative_to(id_dir).parts
                if len(parts) != 2:
                    problems.add(p, "not at <identity>/<camera>/<image> (no camera folder, or nested too deep)")
                    continue
                samples.append(self._sample(p, id_dir.name, parts[0], None, provenance, licence))
        return self._finish(samples, problems)


# -- identity splits -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReidSplitSpec:
    """How identities are split when a dataset has no split of its own, and how validation is held out.

    ``test_identities``: share of a source's identities used for query/gallery (sources without their own
    split). ``val_identities``: share of the training identities held out (query/gallery) for validation;
    0 makes validation reuse the test query/gallery (flagged as ``val_is_test``: model selection then sees
    the test set). ``val_sources``: the sources validation identities are taken from (default: every
    source; e.g. only the synthetic one, to keep every identity of a tiny real set for training).
    ``queries_per_identity``: query images per identity (one per camera, leaving at least one camera's
    images in the gallery).
    """

    test_identities: float = 0.5
    val_identities: float = 0.15
    val_sources: list[str] | None = None
    queries_per_identity: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.val_sources is not None:
            object.__setattr__(self, "val_sources", [str(v) for v in self.val_sources])
        for k in ("test_identities", "val_identities"):
            v = getattr(self, k)
            if not 0.0 <= v < 1.0:
                raise DataError(f"data.split.{k} must be in [0, 1), got {v}")
        if self.queries_per_identity < 1:
            raise DataError(f"data.split.queries_per_identity must be >= 1, got {self.queries_per_identity}")


def _rng(seed: int, *tags: str | int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(str(t).encode()) for t in tags)])


def camera_key(s: Sample) -> str | None:
    cam = s.meta.get("camera")
    return None if cam is None else f"{s.source}:{cam}"


def _pick_queries(label: str, items: list[Sample], spec: ReidSplitSpec, tag: str,
                  single_camera: bool = False) -> tuple[list[Sample], list[Sample]]:
    """Query and gallery images of one identity: one query per chosen camera, at least one camera left
    entirely to the gallery (so every query has a match in another camera). An identity seen by one camera
    only stays in the gallery, unless its whole dataset has one camera (``single_camera``): then one of its
    images is a query (matches within the camera: evaluate with task.exclude_same_camera=false)."""
    items = sorted(items, key=lambda s: s.key)
    rng = _rng(spec.seed, tag, label)
    by_cam: dict[str, list[Sample]] = defaultdict(list)
    for s in items:
        by_cam[str(camera_key(s))].append(s)
    queries: list[Sample] = []
    if None not in {camera_key(s) for s in items} and len(by_cam) >= 2:
        cams = sorted(by_cam)
        chosen = rng.choice(len(cams), min(spec.queries_per_identity, len(cams) - 1), replace=False)
        for ci in sorted(chosen):
            group = by_cam[cams[ci]]
            queries.append(group[int(rng.integers(len(group)))])
    elif (single_camera or None in {camera_key(s) for s in items}) and len(items) >= 2:
        queries.append(items[int(rng.integers(len(items)))])
    qkeys = {s.key for s in queries}
    return queries, [s for s in items if s.key not in qkeys]


def _n_of(n: int, fraction: float, keep: int = 1) -> int:
    """round(n * fraction), at least 1 when fraction > 0, leaving at least ``keep``."""
    if fraction <= 0 or n <= keep:
        return 0
    return int(min(max(1, round(n * fraction)), n - keep))


def split_identities(samples: Sequence[Sample], spec: ReidSplitSpec) -> tuple[dict[str, list[Sample]], dict[str, Any]]:
    """Train / val_query / val_gallery / query / gallery, by identity; returns the splits and an info dict
    (warnings, counts of images left out of training: junk and distractors)."""
    warnings: list[str] = []
    by_source: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_source[s.source].append(s)
    own = {src for src, items in by_source.items() if any(s.meta.get("role") in TEST_ROLES for s in items)}

    # 1. identity -> train | test, from the datasets' own splits
    decided: dict[str, str] = {}
    witness: dict[str, Sample] = {}
    for s in samples:
        role = s.meta.get("role")
        if s.source not in own or s.meta.get("junk") or role is None:
            continue
        side = "train" if role == "train" else "test"
        if s.meta.get("distractor"):
            side = "test"
        prev = decided.get(s.label)
        if prev is not None and prev != side:
            raise DataError(f"{s.path}: identity {s.label} is a {side} identity here but a {prev} identity in "
                            f"{witness[s.label].path}; the split would leak it (check the folders or namespaces)")
        decided[s.label], witness[s.label] = side, s
    # 2. a seeded split of the other identities, per source
    free: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if not s.meta.get("junk") and s.label not in decided:
            if s.meta.get("distractor"):
                decided[s.label] = "test"
            else:
                free[s.source].add(s.label)
    for src in sorted(free):
        labels = sorted(free[src] - set(decided))
        order = [labels[i] for i in _rng(spec.seed, "test", src).permutation(len(labels))]
        n_test = _n_of(len(labels), spec.test_identities, keep=2)
        for i, label in enumerate(order):
            decided[label] = "test" if i < n_test else "train"
    # 3. validation identities, held out of the training identities (multi-camera ones, per source)
    train_ids: dict[str, set[str]] = defaultdict(set)
    cams: dict[str, set[str | None]] = defaultdict(set)
    for s in samples:
        if not s.meta.get("junk"):
            cams[s.label].add(camera_key(s))
            if decided.get(s.label) == "train":
                train_ids[s.source].add(s.label)
    val_ids: set[str] = set()
    if spec.val_identities > 0:
        unknown = sorted(set(spec.val_sources or ()) - set(by_source))
        if unknown:
            raise DataError(f"data.split.val_sources: unknown source(s) {unknown} (sources: {sorted(by_source)})")
        for src in sorted(train_ids):
            if spec.val_sources is not None and src not in spec.val_sources:
                continue
            labels = sorted(train_ids[src] - val_ids)
            one_cam = len({c for lab in labels for c in cams[lab]}) == 1
            usable = [lab for lab in labels if len(cams[lab]) >= 2 or None in cams[lab] or one_cam]
            n_val = min(_n_of(len(labels), spec.val_identities, keep=2), len(usable))
            picked = [usable[i] for i in _rng(spec.seed, "val", src).permutation(len(usable))[:n_val]]
            val_ids.update(picked)
            if n_val == 0 and labels:
                warnings.append(f"{src}: no identity could be held out for validation "
                                f"({len(labels)} training identities, {len(usable)} seen by 2+ cameras)")
    # 4. assign the images
    out: dict[str, list[Sample]] = {k: [] for k in SPLIT_NAMES}
    pending: dict[tuple[str, str], list[Sample]] = defaultdict(list)  # (stage, label) -> images to place
    has_query: set[str] = set()
    not_trained = {"junk": 0, "distractor": 0}
    for s in samples:
        role = s.meta.get("role") if s.source in own else None
        if s.meta.get("junk"):
            if role in ("gallery", "test") or (role is None and s.source not in own):
                out["gallery"].append(s)  # kept so the protocol can ignore it explicitly
            else:
                not_trained["junk"] += 1
            continue
        if s.meta.get("distractor") and (role == "train" or (role is None and s.source in own)):
            not_trained["distractor"] += 1
            continue
        side = decided[s.label]
        if side == "train" and s.label in val_ids:
            pending[("val", s.label)].append(s)
        elif side == "train":
            out["train"].append(s)
        elif role == "query":
            out["query"].append(s)
            has_query.add(s.label)
        elif role == "gallery" or s.meta.get("distractor"):
            out["gallery"].append(s)
        else:
            pending[("test", s.label)].append(s)
    source_cams: dict[str, set[str | None]] = defaultdict(set)
    for s in samples:
        source_cams[s.source].add(camera_key(s))
    single = {src for src, c in source_cams.items() if len(c) == 1 and None not in c}
    for src in sorted(single):
        warnings.append(f"{src}: one camera only; its queries are matched within that camera (evaluate it with "
                        f"task.exclude_same_camera=false and task.cross_camera=false)")
    for (stage, label), items in sorted(pending.items()):
        prefix = "val_" if stage == "val" else ""
        if label in has_query:
            out["gallery"] += items
            continue
        q, g = _pick_queries(label, items, spec, stage, all(s.source in single for s in items))
        out[prefix + "query"] += q
        out[prefix + "gallery"] += g
    for what, n in not_trained.items():
        if n:
            warnings.append(f"{n} {what} image(s) in training folders were not used (they have no identity to learn)")
    val_is_test = not out["val_query"]
    if val_is_test:
        out["val_query"], out["val_gallery"] = list(out["query"]), list(out["gallery"])
        if spec.val_identities > 0:
            warnings.append("no validation identities: validation reuses the test query/gallery (val_is_test)")
    out = {k: sorted(v, key=lambda s: s.key) for k, v in out.items()}
    warnings += check_reid_splits(out, val_is_test)
    return out, {"warnings": warnings, "val_is_test": val_is_test, "not_trained": not_trained}


def check_reid_splits(splits: Mapping[str, Sequence[Sample]], val_is_test: bool = False) -> list[str]:
    """Raise on an identity leak or an empty split; return warnings (query identities absent from the gallery)."""
    counts = {k: len(v) for k, v in splits.items()}
    for name in SPLIT_NAMES:
        if not splits.get(name):
            raise DataError(f"re-id split {name!r} is empty (split counts {counts}); add identities seen by two or "
                            f"more cameras, or change data.split")
    ids = {k: {s.label for s in v if not s.meta.get("junk")} for k, v in splits.items()}
    if len(ids["train"]) < 2:
        raise DataError(f"re-id training needs at least 2 identities, the split has {len(ids['train'])}")
    evals = ("query", "gallery") if val_is_test else ("val_query", "val_gallery", "query", "gallery")
    for other in evals:
        leak = ids["train"] & ids[other]
        if leak:
            raise DataError(f"identity leak: {sorted(leak)[:5]} are in both train and {other}")
    if not val_is_test:
        leak = (ids["val_query"] | ids["val_gallery"]) & (ids["query"] | ids["gallery"])
        if leak:
            raise DataError(f"identity leak: {sorted(leak)[:5]} are in both validation and test")
    warnings = []
    for q, g in (("query", "gallery"), ("val_query", "val_gallery")):
        absent = sorted(ids[q] - ids[g])
        if absent and not (val_is_test and q == "val_query"):
            warnings.append(f"{len(absent)} {q} identit{'y is' if len(absent) == 1 else 'ies are'} absent from the "
                            f"{g} (their queries cannot be matched): {absent[:10]}")
    return warnings


# -- P x K sampling ------------------------------------------------------------------------------------
class PKBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of P identities x K images (``batch_size = P * K``), seeded per epoch.

    ``synthetic`` flags the synthetic samples; with ``synthetic_fraction`` (or a ``schedule`` of fractions
    over epochs, as :class:`~vision.data.sampling.MixedBatchSampler`) ``round(P * fraction)`` of the P
    identities of every batch are synthetic and the rest real. Camera-aware (``cameras`` given): the K
    images of an identity are drawn round-robin over its cameras, so they come from K different cameras
    when it has K. An identity with fewer than K images repeats some (with other augmentation seeds).
    Yields ``(sample index, augmentation seed)``; depends only on (seed, epoch).
    """

    def __init__(self, identities: Sequence[str], batch_size: int, num_instances: int, seed: int,
                 cameras: Sequence[Any] | None = None, synthetic: Sequence[bool] | None = None,
                 synthetic_fraction: float | None = None, schedule: list[dict] | None = None,
                 num_batches: int | None = None, camera_aware: bool = True) -> None:
        k = int(num_instances)
        if k < 1:
            raise ValueError(f"num_instances (K) must be >= 1, got {num_instances}")
        if batch_size % k:
            raise ValueError(f"batch_size {batch_size} is not a multiple of num_instances {k} (P x K)")
        self.p, self.k = batch_size // k, k
        if self.p < 2:
            raise ValueError(f"a P x K batch needs P >= 2 identities (batch_size {batch_size}, K {k})")
        self.seed = int(seed)
        n = len(identities)
        self.cameras = list(cameras) if cameras is not None and camera_aware else [None] * n
        flags = list(synthetic) if synthetic is not None else [False] * n
        self.by_id: dict[str, list[int]] = defaultdict(list)
        for i, ident in enumerate(identities):
            self.by_id[ident].append(i)
        self.syn_ids = sorted(i for i, idx in self.by_id.items() if flags[idx[0]])
        self.real_ids = sorted(i for i, idx in self.by_id.items() if not flags[idx[0]])
        self.mixed = synthetic_fraction is not None or bool(schedule)
        self.schedule = MixedBatchSampler.check(schedule or [{"synthetic_fraction": synthetic_fraction or 0.0}])
        self.num_batches = int(num_batches or max(1, n // batch_size))
        self.epoch = 0
        for e in self.schedule:
            self._counts(float(e["synthetic_fraction"]))  # fail now, not mid-training

    def fraction_at(self, epoch: int) -> float:
        start = 0
        for e in self.schedule:
            if "epochs" not in e or epoch < start + e["epochs"]:
                return float(e["synthetic_fraction"])
            start += e["epochs"]
        return float(self.schedule[-1]["synthetic_fraction"])

    def _counts(self, fraction: float) -> tuple[int, int]:
        if not self.mixed:
            if len(self.by_id) < self.p:
                raise ValueError(f"P = {self.p} identities per batch but the training split has only "
                                 f"{len(self.by_id)}; lower batch_size or raise num_instances")
            return self.p, 0
        n_syn = int(round(self.p * fraction))
        n_real = self.p - n_syn
        for n, pool, what in ((n_syn, self.syn_ids, "synthetic"), (n_real, self.real_ids, "real")):
            if n and len(pool) < n:
                raise ValueError(f"data.mix wants {n} {what} identities per batch (P = {self.p}, synthetic_fraction "
                                 f"{fraction}) but the training split has {len(pool)} {what} identities")
        return n_real, n_syn

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def _identity_stream(self, pool: list[str], tag: int) -> Iterator[str]:
        rnd = 0
        while True:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, tag, rnd))
            for j in torch.randperm(len(pool), generator=g).tolist():
                yield pool[j]
            rnd += 1

    def _order(self, ident: str) -> list[int]:
        """This epoch's order of an identity's images: shuffled, round-robin over cameras."""
        idx = self.by_id[ident]
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(ident.encode())])
        groups: dict[str, list[int]] = defaultdict(list)
        for i in idx:
            groups[str(self.cameras[i])].append(i)
        lists = [[g[j] for j in rng.permutation(len(g))] for g in groups.values()]
        lists = [lists[j] for j in rng.permutation(len(lists))]
        out = []
        for r in range(max(len(g) for g in lists)):
            out += [g[r] for g in lists if r < len(g)]
        return out

    def _take(self, stream: Iterator[str], held: deque, n: int, used: set[str]) -> list[str]:
        out: list[str] = []
        skipped: list[str] = []
        while len(out) < n:
            ident = held.popleft() if held else next(stream)
            if ident in used:
                skipped.append(ident)  # already in this batch: it comes first in the next one
                continue
            used.add(ident)
            out.append(ident)
        held.extend(skipped)
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        n_real, n_syn = self._counts(self.fraction_at(self.epoch))
        if self.mixed:
            streams = [(self._identity_stream(self.real_ids, 1), deque(), n_real),
                       (self._identity_stream(self.syn_ids, 2), deque(), n_syn)]
        else:
            streams = [(self._identity_stream(sorted(self.by_id), 0), deque(), self.p)]
        cursor: dict[str, int] = {}
        orders: dict[str, list[int]] = {}
        for b in range(self.num_batches):
            used: set[str] = set()
            batch: list[int] = []
            for stream, held, n in streams:
                for ident in self._take(stream, held, n, used) if n else []:
                    order = orders.get(ident) or orders.setdefault(ident, self._order(ident))
                    c = cursor.get(ident, 0)
                    batch += [order[(c + j) % len(order)] for j in range(self.k)]
                    cursor[ident] = c + self.k
            yield [(i, mix_seed(self.seed, self.epoch, b, pos)) for pos, i in enumerate(batch)]


# -- datasets ------------------------------------------------------------------------------------------
class ReidDataset(Dataset):
    """Training items ``(image, identity index, sample index)``; evaluation items (``roles`` given)
    ``(image, identity index, camera index, sample index, role)`` with role 0 = query, 1 = gallery and
    identity -1 for junk images (which the Market protocol ignores)."""

    def __init__(self, samples: Sequence[Sample], spec: PreprocessSpec, identity_index: Mapping[str, int],
                 augment=None, readers: Mapping[str, Any] | None = None,
                 camera_index: Mapping[str, int] | None = None, roles: Sequence[int] | None = None) -> None:
        self.samples = list(samples)
        self.spec = spec
        self.identity_index = dict(identity_index)
        self.augment = augment
        self.readers = dict(readers or {})
        self.camera_index = dict(camera_index or {})
        self.roles = list(roles) if roles is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, idx: int, seed: int | None = None) -> torch.Tensor:
        s = self.samples[idx]
        try:
            reader = self.readers.get(s.source)
            img = reader(s) if reader is not None else read_image(s.path)
        except ImageReadError as e:
            raise DataError(str(e)) from e
        if img.shape[0] < 2 or img.shape[1] < 2:
            raise DataError(f"{s.path}: empty crop ({img.shape[1]}x{img.shape[0]} pixels)")
        img = aug.apply(self.augment, img, seed)
        return torch.from_numpy(normalize(resize_image(img, self.spec)[0], self.spec))

    def __getitem__(self, item: int | tuple[int, int]):
        idx, seed = item if isinstance(item, tuple) else (item, None)
        s = self.samples[idx]
        x = self.image(idx, seed)
        if self.roles is None:
            return x, self.identity_index[s.label], idx
        ident = -1 if s.meta.get("junk") else self.identity_index[s.label]
        cam = self.camera_index.get(str(camera_key(s)), -1)
        return x, ident, cam, idx, self.roles[idx]


# -- datamodule ----------------------------------------------------------------------------------------
def _plain(x: Any) -> Any:
    """Config containers (OmegaConf or not) as plain dicts / lists."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) or (isinstance(x, Sequence) and not isinstance(x, (str, bytes))):
        return [_plain(v) for v in x]
    return x


class ReidDataModule(pl.LightningDataModule):
    """Re-id sources -> identity splits -> P x K training batches and query/gallery evaluation sets.

    ``labels`` are the training identities (the identity classifier's classes); ``val``/``test`` loaders
    serve query then gallery images of held-out identities (see :class:`ReidDataset`). The split is
    saved into checkpoints (``state_dict``), so evaluation of a checkpoint uses the run's own identities.
    """

    task = "reid"

    def __init__(self, sources: Mapping[str, Source], preprocess: Mapping[str, Any] | None = None,
                 augment: Sequence[Any] | None = None, split: Mapping[str, Any] | None = None, seed: int = 0,
                 batch_size: int = 64, num_instances: int = 4, eval_batch_size: int | None = None,
                 num_workers: int = 0, camera_aware: bool = True, batches_per_epoch: int | None = None,
                 mix: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not sources:
            raise DataError("data.sources is empty: configure at least one re-id data source")
        self.sources = dict(sources)
        for name, src in self.sources.items():
            if not isinstance(src, Source):
                raise DataError(f"data.sources.{name} is not a data source (got {type(src).__name__})")
            src.name = name
            if hasattr(src, "report"):
                src.report.source = name
        pre = {"size": (256, 128), "resize": "stretch", **dict(preprocess or {})}
        self.spec = PreprocessSpec(**pre)
        self.augment = aug.build(augment)
        try:
            self.split_spec = ReidSplitSpec(seed=seed, **_plain(dict(split or {})))
        except TypeError as e:
            raise DataError(f"data.split: {e} (keys: test_identities, val_identities, val_sources, "
                            f"queries_per_identity)") from e
        self.seed = seed
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        if self.batch_size % self.num_instances or self.batch_size // self.num_instances < 2:
            raise DataError(f"data.batch_size ({batch_size}) must be P x data.num_instances ({num_instances}) "
                            f"with P >= 2 identities per batch")
        self.eval_batch_size = eval_batch_size or max(self.batch_size, 32)
        self.num_workers = num_workers
        self.camera_aware = camera_aware
        self.batches_per_epoch = batches_per_epoch
        self.mix = check_mix(_plain(dict(mix or {})))
        self._assignment: dict[str, list[str]] | None = None
        self.splits: dict[str, list[Sample]] = {}
        self.labels: list[str] = []
        self.identities: list[str] = []  # every non-junk identity (index space of evaluation items)
        self.cameras: list[str] = []  # "source:camera" (index space of evaluation cameras)
        self.cards: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}
        self._samples: list[Sample] = []

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        samples, self.cards = load_sources(self.sources, self.source_kind)
        self._samples = samples
        if self._assignment is not None:
            self.splits, self.info = self._apply_saved(samples, self._assignment)
        else:
            self.splits, self.info = split_identities(samples, self.split_spec)
        self._assignment = {k: [s.key for s in v] for k, v in self.splits.items()}
        self._index()
        for w in self.info["warnings"]:
            log.warning("data: %s", w)
        log.info("data: %s", {k: len(v) for k, v in self.splits.items()})

    def _index(self) -> None:
        self.labels = sorted({s.label for s in self.splits["train"]})
        self.identities = sorted({s.label for s in self._samples if not s.meta.get("junk")})
        self.cameras = sorted({str(camera_key(s)) for s in self._samples if camera_key(s) is not None})

    def _apply_saved(self, samples: Sequence[Sample], assignment: Mapping[str, list[str]]):
        by_key = {s.key: s for s in samples}
        out: dict[str, list[Sample]] = {}
        missing = []
        for name in SPLIT_NAMES:
            if name not in assignment:
                raise DataError(f"checkpoint split: missing re-id split {name!r}")
            out[name] = [by_key[k] for k in assignment[name] if k in by_key]
            missing += [k for k in assignment[name] if k not in by_key]
        if missing:
            raise DataError(f"checkpoint split: {len(missing)} sample(s) of the saved split are not in the data, "
                            f"e.g. {missing[:3]}")
        val_is_test = [s.key for s in out["val_query"]] == [s.key for s in out["query"]]
        return out, {"warnings": check_reid_splits(out, val_is_test), "val_is_test": val_is_test,
                     "restored": True}

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def source_kind(self, name: str) -> str:
        return str(getattr(self.sources[name], "kind", "real"))

    # -- datasets and loaders --------------------------------------------------------------------
    def _readers(self) -> dict[str, Any]:
        return {n: src.read for n, src in self.sources.items() if hasattr(src, "read")}

    def train_dataset(self, augment: bool = True) -> ReidDataset:
        if not self.splits:
            raise DataError("call setup() first")
        return ReidDataset(self.splits["train"], self.spec, {c: i for i, c in enumerate(self.labels)},
                           self.augment if augment else None, self._readers())

    def eval_samples(self, stage: str) -> tuple[list[Sample], list[Sample]]:
        """(query, gallery) of ``val`` or ``test``."""
        if not self.splits:
            raise DataError("call setup() first")
        if stage in ("val", "validate", "validation"):
            return self.splits["val_query"], self.splits["val_gallery"]
        if stage == "test":
            return self.splits["query"], self.splits["gallery"]
        raise DataError(f"unknown evaluation stage {stage!r} (val or test)")

    def eval_dataset(self, stage: str) -> ReidDataset:
        """Query images first, then the gallery (``role`` 0 / 1)."""
        q, g = self.eval_samples(stage)
        return ReidDataset(q + g, self.spec, {c: i for i, c in enumerate(self.identities)}, None, self._readers(),
                           {c: i for i, c in enumerate(self.cameras)}, [0] * len(q) + [1] * len(g))

    def train_sampler(self) -> PKBatchSampler:
        train = self.splits["train"]
        kinds = {name: self.source_kind(name) for name in self.sources}
        try:
            return PKBatchSampler([s.label for s in train], self.batch_size, self.num_instances, self.seed,
                                  cameras=[camera_key(s) for s in train],
                                  synthetic=[kinds[s.source] != "real" for s in train],
                                  num_batches=self.batches_per_epoch, camera_aware=self.camera_aware, **self.mix)
        except (TypeError, ValueError) as e:
            raise DataError(f"data: {e}") from e

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset(), batch_sampler=self.train_sampler(), num_workers=self.num_workers,
                          persistent_workers=False)

    def _eval_loader(self, stage: str) -> DataLoader:
        return DataLoader(self.eval_dataset(stage), batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def calibration_samples(self, n: int, seed: int = 0) -> list[Sample]:
        """An identity-balanced draw from the training split (for int8 calibration): one image per identity
        per round, identities in a seeded order, until ``n``."""
        by_id: dict[str, list[Sample]] = defaultdict(list)
        for s in self.splits["train"]:
            by_id[s.label].append(s)
        rng = np.random.default_rng(seed)
        ids = sorted(by_id)
        ids = [ids[i] for i in rng.permutation(len(ids))]
        pools = {i: [by_id[i][j] for j in rng.permutation(len(by_id[i]))] for i in ids}
        out: list[Sample] = []
        r = 0
        while len(out) < n and any(r < len(p) for p in pools.values()):
            out += [pools[i][r] for i in ids if r < len(pools[i])]
            r += 1
        return out[:n]

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "splits": self._assignment, "preprocess": self.spec.to_dict(),
                "task": self.task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's split (also after ``setup``: the saved split always wins)."""
        saved = state.get("labels")
        self._assignment = state.get("splits")
        if self.splits and self._assignment is not None:
            self.splits, self.info = self._apply_saved(self._samples, self._assignment)
            self._index()
        if self.labels and saved and list(saved) != self.labels:
            raise DataError(f"the checkpoint was trained on {len(saved)} identities {saved[:5]}..., "
                            f"the data gives {len(self.labels)} {self.labels[:5]}...")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "labels": self.labels, "mix": self.mix or None,
                               "kinds": {n: self.source_kind(n) for n in self.sources},
                               "pk": {"P": self.batch_size // self.num_instances, "K": self.num_instances},
                               "val_is_test": self.info.get("val_is_test"),
                               "warnings": list(self.info.get("warnings", [])),
                               "read_reports": {n: src.report.to_dict() for n, src in self.sources.items()
                                                if hasattr(src, "report")}}
        for name, items in self.splits.items():
            per_src: dict[str, int] = defaultdict(int)
            for s in items:
                per_src[s.source] += 1
            out[name] = {"count": len(items), "identities": len({s.label for s in items if not s.meta.get("junk")}),
                         "cameras": len({camera_key(s) for s in items}), "by_source": dict(per_src)}
        return out
