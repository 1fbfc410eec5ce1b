"""Dataset writers: COCO detection, MOT tracking and Market-1501 re-id, with provenance.

Every writer renders the scene once and writes atomically: files go to a
temporary sibling folder ``.<name>.tmp-<pid>`` that is renamed to the output
folder at the end (removed on any error or interruption). An existing output
folder is never overwritten (FileExistsError) and an unwritable parent is
reported (PermissionError) before anything is rendered. Output is
byte-identical for the same config and seed (fixed JPEG quality, sorted JSON
keys, no timestamps).

Layouts (``write_dataset`` puts each format in a sub-folder ``coco/``, ``mot/``,
``reid/`` and writes one ``provenance.jsonl`` and ``card.yaml`` at the top)::

    annotations.json, images/cam01/000000.jpg            (COCO)
    cam01/seqinfo.ini, cam01/img1/000001.jpg, cam01/gt/gt.txt   (MOT)
    bounding_box_train/, query/, bounding_box_test/        (Market-1501)

Camera faults (see :class:`~synthetic.scene.scene.SceneConfig`): frames whose
fault hides the scene (``turned_away``, ``too_dark``) have no objects, so they
are written as images without boxes/rows/crops; under ``covered`` the pixels
behind the cover are occluded, so an object hidden by it has no COCO box, no
MOT row (unlike objects hidden by other objects, which MOT keeps with
visibility 0) and no crop; every frame's ``params`` record the fault.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from synthetic import __version__ as GENERATOR_VERSION

from .scene import CATEGORIES, Frame, Scene, SceneConfig
from .sprites import generated_licence

__all__ = [
    "GENERATOR_NAME", "GENERATOR_VERSION", "CATEGORY_IDS", "CocoSink", "MotSink", "MarketSink", "write_coco",
    "write_mot", "write_reid", "write_dataset", "market_name", "parse_market_name",
]

GENERATOR_NAME = "synthetic.scene"
CATEGORY_IDS = {c: i + 1 for i, c in enumerate(CATEGORIES)}
JPEG_QUALITY = 92
REID_SIZE = (128, 256)  # width, height


def _cam_dir(cam: int) -> str:
    return f"cam{cam:02d}"


def _encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _write_bytes(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _hidden_by_fault(o: dict) -> bool:
    """An object whose every visible pixel is behind a camera fault's cover."""
    return o.get("fault_hidden_pixels", 0) > 0 and o["visible_pixels"] == 0


def _xywh(b) -> list:
    return [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)]


def market_name(identity: int, camera: int, frame: int, n: int) -> str:
    """Market-1501 file name ``{id:04d}_c{cam}s1_{frame:06d}_{n:02d}.jpg``."""
    return f"{identity:04d}_c{camera}s1_{frame:06d}_{n:02d}.jpg"


def parse_market_name(name: str) -> tuple[int, int, int, int]:
    """``(identity, camera, frame, n)`` of a Market-1501 file name."""
    stem = name.rsplit(".", 1)[0]
    pid, cs, frame, n = stem.split("_")
    if not (cs.startswith("c") and "s" in cs):
        raise ValueError(f"not a Market-1501 name: {name!r}")
    cam, _seq = cs[1:].split("s", 1)
    return int(pid), int(cam), int(frame), int(n)


# --------------------------------------------------------------------------
# sinks: begin(folder) / add(frame, jpeg) -> provenance records / finish() -> records
class _Sink:
    format = ""
    task = ""

    def __init__(self, scene: Scene):
        self.scene = scene
        self.root: Path | None = None

    def begin(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def add(self, frame: Frame, jpeg: bytes | None = None) -> list[dict]:
        raise NotImplementedError

    def finish(self) -> list[dict]:
        return []

    def counts(self) -> dict:
        return {}


class CocoSink(_Sink):
    """COCO detection: ``annotations.json`` + ``images/<cam>/<frame>.jpg`` (visible boxes)."""

    format = "coco"
    task = "detection"

    def begin(self, root):
        super().begin(root)
        self.images: list = []
        self.annotations: list = []

    def add(self, frame: Frame, jpeg: bytes | None = None) -> list[dict]:
        jpeg = jpeg if jpeg is not None else _encode_jpeg(frame.image)
        rel = f"images/{_cam_dir(frame.camera)}/{frame.index:06d}.jpg"
        _write_bytes(self.root / rel, jpeg)
        H, W = frame.image.shape[:2]
        iid = len(self.images) + 1
        self.images.append({"id": iid, "file_name": rel, "width": W, "height": H, "camera": frame.camera,
                            "frame": frame.index, "time": frame.time, "params": frame.params})
        for o in frame.objects:
            if not o["visible_fraction"] > 0 or o["bbox_visible"] is None:
                continue
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": iid, "category_id": CATEGORY_IDS[o["category"]],
                "bbox": _xywh(o["bbox_visible"]), "area": int(o["visible_pixels"]), "iscrowd": 0,
                "identity": o["identity"], "camera": frame.camera, "visible_fraction": o["visible_fraction"],
                "truncation": o["truncation"], "pixel_height": o["pixel_height"],
                "amodal_bbox": _xywh(o["bbox_amodal"]), "visibility": o["visibility"],
                "distance": o["distance"], "world_position": o["world_position"],
                **{k: o[k] for k in ("appearance", "appearance_hue_shift") if k in o},
            })
        return [{"file": rel, "camera": frame.camera, "frame": frame.index, "params": frame.params}]

    def finish(self) -> list[dict]:
        doc = {
            "info": {"description": "synthetic.scene procedural surveillance scenes", "version": GENERATOR_VERSION,
                     "contributor": GENERATOR_NAME},
            "licenses": [{"id": 1, "name": "generated"}],
            "categories": [{"id": CATEGORY_IDS[c], "name": c, "supercategory": "person" if c == "person"
                            else "vehicle"} for c in CATEGORIES],
            "images": self.images,
            "annotations": self.annotations,
        }
        with open(self.root / "annotations.json", "w", encoding="utf-8", newline="\n") as fh:
            json.dump(doc, fh, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return []

    def counts(self) -> dict:
        per = {c: 0 for c in CATEGORIES}
        inv = {v: k for k, v in CATEGORY_IDS.items()}
        for a in self.annotations:
            per[inv[a["category_id"]]] += 1
        return {"images": len(self.images), "annotations": len(self.annotations), "per_category": per}


class MotSink(_Sink):
    """MOT-Challenge layout per camera: ``img1/NNNNNN.jpg``, ``gt/gt.txt`` and ``seqinfo.ini``.

    ``gt.txt`` rows: ``frame,id,left,top,width,height,1,class,visibility``
    with 1-based frames, the amodal (full-body) box as in MOT17 (it may extend
    past the image), ``class`` = COCO category id (person 1, car 2, van 3,
    bike 4) and ``visibility`` = ``visible_fraction * (1 - truncation)``
    (occlusion and image border together). Objects hidden entirely by a
    camera fault's cover get no row.
    """

    format = "mot"
    task = "tracking"

    def begin(self, root):
        super().begin(root)
        self.files: dict = {}
        self.lengths: dict = {}
        self.rows = 0
        self.ids: set = set()

    def add(self, frame: Frame, jpeg: bytes | None = None) -> list[dict]:
        jpeg = jpeg if jpeg is not None else _encode_jpeg(frame.image)
        cd = _cam_dir(frame.camera)
        rel = f"{cd}/img1/{frame.index + 1:06d}.jpg"
        _write_bytes(self.root / rel, jpeg)
        fh = self.files.get(frame.camera)
        if fh is None:
            (self.root / cd / "gt").mkdir(parents=True, exist_ok=True)
            fh = open(self.root / cd / "gt" / "gt.txt", "w", encoding="ascii", newline="\n")
            self.files[frame.camera] = fh
            self.lengths[frame.camera] = (0, frame.image.shape[1], frame.image.shape[0])
        n, W, H = self.lengths[frame.camera]
        self.lengths[frame.camera] = (max(n, frame.index + 1), W, H)
        for o in sorted(frame.objects, key=lambda o: o["identity"]):
            if _hidden_by_fault(o):
                continue
            x, y, w, h = _xywh(o["bbox_amodal"])
            fh.write(f"{frame.index + 1},{o['identity']},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,"
                     f"{CATEGORY_IDS[o['category']]},{o['visibility']:.4f}\n")
            self.rows += 1
            self.ids.add(o["identity"])
        return [{"file": rel, "camera": frame.camera, "frame": frame.index, "params": frame.params}]

    def finish(self) -> list[dict]:
        fps = self.scene.config.fps
        for cam, fh in sorted(self.files.items()):
            fh.close()
            n, W, H = self.lengths[cam]
            cd = _cam_dir(cam)
            fr = int(fps) if float(fps).is_integer() else fps
            text = (f"[Sequence]\nname={cd}\nimDir=img1\nframeRate={fr}\nseqLength={n}\nimWidth={W}\n"
                    f"imHeight={H}\nimExt=.jpg\n")
            with open(self.root / cd / "seqinfo.ini", "w", encoding="ascii", newline="\n") as f:
                f.write(text)
        self.files = {}
        return []

    def close(self):
        for fh in self.files.values():
            fh.close()
        self.files = {}

    def counts(self) -> dict:
        return {"sequences": len(self.lengths), "frames": sum(v[0] for v in self.lengths.values()),
                "boxes": self.rows, "identities": len(self.ids)}


class MarketSink(_Sink):
    """Person re-id crops in the Market-1501 layout.

    People with ``visible_fraction >= min_visible``, ``pixel_height >=
    min_height`` and ``truncation <= max_truncation`` are cropped around their
    amodal box with a margin, padded to 1:2 and resized to 128x256.
    Identities are split train/test (disjoint, ``train_fraction`` of the
    people, deterministic from the seed); for every test identity seen by at
    least two cameras the first crop per camera goes to ``query/``, the other
    test crops to ``bounding_box_test/`` (the gallery).
    """

    format = "market1501"
    task = "reid"

    def __init__(self, scene: Scene, min_visible: float = 0.6, min_height: float = 64.0,
                 max_truncation: float = 0.1, train_fraction: float = 0.5, margin: float = 0.08,
                 quality: int = JPEG_QUALITY):
        super().__init__(scene)
        self.min_visible, self.min_height, self.max_truncation = min_visible, min_height, max_truncation
        self.margin, self.quality = margin, quality
        ids = sorted(p.identity for p in scene.people)
        rng = np.random.default_rng(np.random.SeedSequence(scene.config.seed, spawn_key=(7,)))
        perm = [ids[i] for i in rng.permutation(len(ids))]
        k = int(math.ceil(len(ids) * train_fraction))
        self.train_ids = set(perm[:k])
        self.test_ids = set(perm[k:])
        self.num_crops = 0

    def begin(self, root):
        super().begin(root)
        for d in ("bounding_box_train", "bounding_box_test", "query"):
            (self.root / d).mkdir(exist_ok=True)
        self.records: list = []        # (folder, name, identity, camera, frame, params)
        self.first: dict = {}          # (identity, camera) -> index into records of the first test crop
        self.test_cams: dict = {}

    def crop(self, img: np.ndarray, box) -> np.ndarray:
        H, W = img.shape[:2]
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) * 0.5, (y0 + y1) * 0.5
        h = h * (1 + 2 * self.margin)
        w = max(w * (1 + 2 * self.margin), h * 0.5)
        h = max(h, 2 * w)
        X0, Y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        X1, Y1 = X0 + max(2, int(round(w))), Y0 + max(4, int(round(h)))
        px0, py0 = max(0, -X0), max(0, -Y0)
        px1, py1 = max(0, X1 - W), max(0, Y1 - H)
        c = img[max(0, Y0):min(H, Y1), max(0, X0):min(W, X1)]
        if px0 or py0 or px1 or py1:
            c = cv2.copyMakeBorder(c, py0, py1, px0, px1, cv2.BORDER_REPLICATE)
        interp = cv2.INTER_AREA if c.shape[0] > REID_SIZE[1] else cv2.INTER_LINEAR
        return cv2.resize(c, REID_SIZE, interpolation=interp)

    def add(self, frame: Frame, jpeg: bytes | None = None) -> list[dict]:
        n = 0
        for o in sorted(frame.objects, key=lambda o: o["identity"]):
            if (o["category"] != "person" or o["visible_fraction"] < self.min_visible or _hidden_by_fault(o)
                    or o["pixel_height"] < self.min_height or o["truncation"] > self.max_truncation):
                continue
            n += 1
            ident = o["identity"]
            name = market_name(ident, frame.camera, frame.index, n)
            folder = "bounding_box_train" if ident in self.train_ids else "bounding_box_test"
            _write_bytes(self.root / folder / name, _encode_jpeg(self.crop(frame.image, o["bbox_amodal"]),
                                                                 self.quality))
            if folder == "bounding_box_test":
                key = (ident, frame.camera)
                if key not in self.first:
                    self.first[key] = len(self.records)
                self.test_cams.setdefault(ident, set()).add(frame.camera)
            self.records.append([folder, name, ident, frame.camera, frame.index, frame.params])
            self.num_crops += 1
        return []

    def finish(self) -> list[dict]:
        for (ident, cam), i in sorted(self.first.items()):
            if len(self.test_cams[ident]) < 2:
                continue  # a query needs a match in another camera
            folder, name = self.records[i][0], self.records[i][1]
            os.replace(self.root / folder / name, self.root / "query" / name)
            self.records[i][0] = "query"
        out = []
        for folder, name, ident, cam, fr, params in self.records:
            out.append({"file": f"{folder}/{name}", "camera": cam, "frame": fr, "identity": ident, "params": params})
        return out

    def counts(self) -> dict:
        c = {"bounding_box_train": 0, "bounding_box_test": 0, "query": 0}
        ids = {k: set() for k in c}
        for folder, _, ident, *_ in self.records:
            c[folder] += 1
            ids[folder].add(ident)
        return {**c, "train_identities": len(ids["bounding_box_train"]),
                "test_identities": len(ids["bounding_box_test"] | ids["query"]),
                "query_identities": len(ids["query"])}


_SINKS = {"coco": CocoSink, "mot": MotSink, "reid": MarketSink}


# --------------------------------------------------------------------------
# atomic driver
def _as_scene(source) -> Scene:
    if isinstance(source, Scene):
        return source
    if isinstance(source, SceneConfig):
        return Scene(source)
    if isinstance(source, dict):
        return Scene(SceneConfig.from_dict(source))
    raise ValueError(f"source must be a Scene, SceneConfig or config dict, got {type(source).__name__}")


def _preflight(out: Path) -> Path:
    """Refuse an existing output and an unwritable parent; returns the created temporary folder."""
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"output folder already exists, refusing to overwrite: {out}")
    a = out.parent
    while not a.exists():
        if a.parent == a:
            break
        a = a.parent
    if not a.is_dir():
        raise NotADirectoryError(f"cannot create output folder {out}: {a} is not a folder")
    if not os.access(a, os.W_OK | os.X_OK):
        raise PermissionError(f"output parent folder {a} is not writable (needed for {out})")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as e:
        raise PermissionError(f"cannot write in output parent folder {out.parent}: {e}") from e
    return tmp


def _write(source, out_dir, formats, nested: bool, progress: bool, sink_kw: dict | None = None) -> Path:
    for f in formats:
        if f not in _SINKS:
            raise ValueError(f"formats must be among {tuple(_SINKS)}, got {f!r}")
    if not formats:
        raise ValueError("formats must not be empty")
    scene = _as_scene(source)  # validates the config before anything is written
    out = Path(out_dir)
    tmp = _preflight(out)
    sinks = []
    try:
        for f in formats:
            kw = (sink_kw or {}).get(f, {})
            s = _SINKS[f](scene, **kw)
            s.begin(tmp / f if nested else tmp)
            sinks.append((f, s))
        seed = scene.config.seed
        licence = generated_licence(scene.config.person_sprites)
        prov_path = tmp / "provenance.jsonl"
        need_jpeg = any(f in ("coco", "mot") for f in formats)
        with open(prov_path, "w", encoding="utf-8", newline="\n") as prov, tqdm(
                total=len(scene), disable=not progress, unit="frame", desc="synthetic.scene",
                dynamic_ncols=True) as bar:

            def emit(prefix, recs):
                for r in recs:
                    rec = {"file": (f"{prefix}/" if prefix else "") + r.pop("file"), "generator": GENERATOR_NAME,
                           "generator_version": GENERATOR_VERSION, "seed": seed, "licence": licence, **r}
                    prov.write(json.dumps(rec, sort_keys=True, ensure_ascii=True) + "\n")

            for frame in scene.frames(with_mask=False):
                jpeg = _encode_jpeg(frame.image) if need_jpeg else None
                for f, s in sinks:
                    emit(f if nested else "", s.add(frame, jpeg))
                bar.update(1)
            for f, s in sinks:
                emit(f if nested else "", s.finish())
        digest = hashlib.sha256(prov_path.read_bytes()).hexdigest()
        counts = {f: s.counts() for f, s in sinks}
        card = {
            "name": f"synthetic-scene-{'-'.join(formats)}",
            "task": [s.task for _, s in sinks] if len(sinks) > 1 else sinks[0][1].task,
            "source": f"{GENERATOR_NAME} {GENERATOR_VERSION}",
            "generator": GENERATOR_NAME,
            "generator_version": GENERATOR_VERSION,
            "licence": licence,
            "real": False,
            "format": {f: s.format for f, s in sinks} if nested else sinks[0][1].format,
            "layout": {f: f + "/" for f, _ in sinks} if nested else "./",
            "categories": {c: CATEGORY_IDS[c] for c in CATEGORIES},
            "counts": counts if nested else counts[formats[0]],
            "cameras": [c.to_dict() for c in scene.cameras],
            "config": scene.config.to_dict(),
            "provenance": "provenance.jsonl",
            "sha256": {"provenance.jsonl": digest},
        }
        with open(tmp / "card.yaml", "w", encoding="utf-8", newline="\n") as fh:
            yaml.safe_dump(card, fh, sort_keys=False, default_flow_style=False, allow_unicode=False)
        if out.exists():
            raise FileExistsError(f"output folder appeared during generation, refusing to overwrite: {out}")
        try:
            os.replace(tmp, out)
        except OSError as e:
            if out.exists():
                raise FileExistsError(f"output folder appeared during generation: {out}") from e
            raise
    except BaseException:
        for _, s in sinks:
            if isinstance(s, MotSink):
                s.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_coco(source, out_dir, progress: bool = False) -> Path:
    """COCO detection dataset (``annotations.json`` + ``images/``) for a Scene/SceneConfig."""
    return _write(source, out_dir, ("coco",), False, progress)


def write_mot(source, out_dir, progress: bool = False) -> Path:
    """MOT-style tracking sequences (one per camera)."""
    return _write(source, out_dir, ("mot",), False, progress)


def write_reid(source, out_dir, progress: bool = False, **market_kw) -> Path:
    """Market-1501 re-id crops (``min_visible``, ``min_height``, ``max_truncation``, ``train_fraction``...)."""
    return _write(source, out_dir, ("reid",), False, progress, {"reid": market_kw})


def write_dataset(source, out_dir, formats=("coco", "mot", "reid"), progress: bool = False) -> Path:
    """Several formats from one rendering pass, each in its own sub-folder."""
    return _write(source, out_dir, tuple(formats), True, progress)
