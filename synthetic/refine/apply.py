"""Refine a whole generated dataset with a trained refiner: same labels, new pixels, extended provenance.

:func:`refine_dataset` copies a dataset folder (``python -m synthetic`` output with ``coco/``, ``mot/``,
``reid/``; a single-format COCO/MOT/Market folder; or a :class:`~synthetic.detection_source.SceneDetectionSource`
cache) into a new folder, written atomically (a temporary sibling renamed at the end, never over an
existing folder):

- every frame goes through the generator at full resolution (fully convolutional, no tiling seams);
  identical source files (the COCO and MOT copies of one frame) are refined once and stay identical;
  re-id crops (Market-1501 folders) are refined as they are;
- label files are copied byte for byte (``gt.txt``, ``seqinfo.ini``...); COCO ``annotations.json`` keeps
  its ``annotations`` and ``categories`` unchanged, each image entry gains ``refiner`` (MLflow run id,
  checkpoint sha256, mode) and ``refined_from`` (source dataset, file, sha256); ``provenance.jsonl`` lines
  gain the same, ``card.yaml`` gains ``kind: refined`` and ``refiner``;
- ``refinement.json`` records the refiner, counts and the geometry check (edge alignment between source
  and refined frames inside the labelled boxes, :mod:`synthetic.refine.geometry`).

Every frame must have the size the refiner was trained on; a checkpoint from another resolution is refused
before anything is written.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml
from PIL import Image

from synthetic.refine.data import CROP_FOLDERS, to_tensor, to_uint8
from synthetic.refine.networks import CameraModel, build_generator, pad_to_multiple
from vision.checkpointing import load_checkpoint
from vision.errors import CheckpointError, ConfigError, DataError
from vision.runtime.preprocess import IMAGE_EXTENSIONS, ImageReadError, read_image
from vision.utils.io import atomic_directory, atomic_write_json, sha256_file

log = logging.getLogger(__name__)
JPEG_QUALITY = 92  # the scene engine's


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; a GPU asked for where there is none is an error."""
    name = str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"refiner device {device!r} is not a device (cpu, cuda, cuda:N or auto)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"refiner device {device!r}: no CUDA GPU here (use cpu or auto)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"refiner device {device!r}: only cpu, cuda, cuda:N or auto")
    return dev


class Refiner:
    """A trained refiner (``netG`` of a ``task: refiner`` checkpoint), ready for whole frames. ``device``:
    ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the GPU when there is one)."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        self.path = Path(checkpoint)
        ckpt = load_checkpoint(self.path, task="refiner")
        meta = ckpt["vision"]
        info = meta.get("refiner") or {}
        try:
            self.frame_size = (int(info["frame_size"][0]), int(info["frame_size"][1]))
            self.crop_size = int(info["crop_size"])
            self.mode = str(info["mode"])
            self.generator = build_generator(info["generator"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{self.path}: refiner checkpoint without frame size / crop size / generator "
                                  f"settings ({e})") from e
        state = {k[len("netG."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("netG.")}
        try:
            self.generator.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: generator weights do not fit its recorded settings ({e})") from e
        self.device = resolve_device(device)
        self.generator.to(self.device).eval()
        self.sha256 = sha256_file(self.path)
        self.run_id = (meta.get("mlflow") or {}).get("run_id")
        self.tracking_uri = (meta.get("mlflow") or {}).get("tracking_uri")
        self.trained_on = info.get("data") or {}
        self.meta = meta

    def info(self) -> dict[str, Any]:
        """What a refined dataset records about its refiner."""
        out = {"run_id": self.run_id, "checkpoint": self.path.name, "checkpoint_sha256": self.sha256,
               "mode": self.mode, "frame_size": list(self.frame_size), "crop_size": self.crop_size}
        if isinstance(self.generator, CameraModel):
            out["camera"] = self.generator.describe()
        return out

    def check_size(self, width: int, height: int, where: str) -> None:
        if (int(width), int(height)) != self.frame_size:
            fw, fh = self.frame_size
            raise DataError(f"{where}: frame is {width}x{height} but the refiner {self.path} was trained on "
                            f"{fw}x{fh} frames (a checkpoint from a different resolution); refine data rendered "
                            f"at {fw}x{fh} or train a refiner on {width}x{height} frames")

    @torch.no_grad()
    def refine(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """HxWx3 uint8 RGB frames of one size -> refined frames of the same size."""
        if not len(images):
            return []
        x = torch.stack([to_tensor(im) for im in images]).to(self.device)
        if isinstance(self.generator, CameraModel):  # per-pixel: no padding; noise seeded by each frame's pixels
            y = self.generator(x, seeds=[zlib.crc32(np.ascontiguousarray(im).tobytes()) for im in images])
            return list(to_uint8(y))
        x, (h, w) = pad_to_multiple(x, 4)
        y = self.generator(x)[..., :h, :w]
        return list(to_uint8(y))


def _encode(img: np.ndarray, suffix: str) -> bytes:
    buf = io.BytesIO()
    if suffix in (".jpg", ".jpeg"):
        Image.fromarray(img).save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        fmt = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}.get(suffix, "PNG")
        kw = {"lossless": True} if fmt == "WEBP" else {}
        Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _is_crop(rel: Path) -> bool:
    return any(part in CROP_FOLDERS for part in rel.parts)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise DataError(f"{path}: corrupt or unreadable image ({e})") from e


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refine_dataset(refiner: Refiner | str | Path, input_dir: str | Path, output_dir: str | Path,
                   batch_size: int = 4, progress: bool = False, geometry_images: int = 16,
                   on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the refined copy of ``input_dir`` to ``output_dir`` (see the module docstring); returns the
    summary also written to ``output_dir/refinement.json``."""
    from synthetic.refine.geometry import dataset_geometry

    src = Path(input_dir).expanduser()
    out = Path(output_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"{src}: input dataset folder not found")
    if out.exists():
        raise DataError(f"{out}: already exists; refined datasets are never overwritten (choose another output)")
    if out.resolve().is_relative_to(src.resolve()):
        raise DataError(f"{out}: the output must not be inside the input dataset {src}")
    if not isinstance(refiner, Refiner):
        refiner = Refiner(refiner)
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise DataError(f"{src}: no images to refine")
    frames = [p for p in images if not _is_crop(p.relative_to(src))]
    crops = [p for p in images if _is_crop(p.relative_to(src))]
    for p in frames:  # every frame at the refiner's resolution, before anything is written
        refiner.check_size(*_image_size(p), where=str(p))
    info = refiner.info()
    src_name = str(src.resolve())
    digests: dict[Path, str] = {}
    done: dict[str, bytes] = {}  # source sha256 -> refined bytes (COCO and MOT copies of one frame)
    total = len(images)
    count = 0
    try:
        with atomic_directory(out) as tmp:
            for d in sorted(p for p in src.rglob("*") if p.is_dir()):  # the layout, empty folders included
                (tmp / d.relative_to(src)).mkdir(parents=True, exist_ok=True)
            def flush(batch: list[tuple[Path, str, np.ndarray]]) -> None:
                nonlocal count
                if not batch:
                    return
                for (p, key, _), ref in zip(batch, refiner.refine([im for _, _, im in batch])):
                    done[key] = _encode(ref, p.suffix.lower())
                    _write(tmp / p.relative_to(src), done[key])
                count += len(batch)
                if on_progress:
                    on_progress(count, total)

            for group, bs in ((frames, max(1, int(batch_size))), (crops, 1)):
                pending: list[tuple[Path, str, np.ndarray]] = []
                for p in group:
                    key = _sha256_bytes(p.read_bytes())
                    digests[p] = key
                    if any(k == key for _, k, _ in pending):
                        flush(pending)
                        pending = []
                    if key in done:  # a copy of a frame already refined
                        _write(tmp / p.relative_to(src), done[key])
                        count += 1
                        continue
                    try:
                        img = read_image(p)
                    except ImageReadError as e:
                        raise DataError(str(e)) from e
                    pending.append((p, key, img))
                    if len(pending) >= bs:
                        flush(pending)
                        pending = []
                flush(pending)
            if progress:
                print(f"refined {total} images ({len(done)} distinct)", flush=True)
            extra = _copy_labels(src, tmp, files, digests, info, src_name)
            geometry = dataset_geometry(src, tmp, max_images=geometry_images)
            summary = {"refiner": info, "refiner_trained_on": refiner.trained_on, "input": src_name,
                       "output": str(out.resolve()), "images": total, "distinct_images": len(done),
                       "frames": len(frames), "crops": len(crops), "label_files": extra, "geometry": geometry}
            atomic_write_json(tmp / "refinement.json", summary)
    except FileExistsError as e:
        raise DataError(f"{out}: already exists; refined datasets are never overwritten ({e})") from e
    except (PermissionError, NotADirectoryError) as e:
        raise DataError(f"{out}: cannot write the refined dataset here ({e})") from e
    log.info("refined %s -> %s (%d images)", src, out, total)
    return summary


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _copy_labels(src: Path, tmp: Path, files: Sequence[Path], digests: dict[Path, str], info: dict[str, Any],
                 src_name: str) -> list[str]:
    """Copy every non-image file; extend COCO image entries, provenance lines and the card."""
    written = []
    card_files = []
    for p in files:
        rel = p.relative_to(src)
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            continue
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if p.name == "annotations.json":
            _extend_coco(p, dst, src, digests, info, src_name)
        elif p.name == "provenance.jsonl":
            _extend_provenance(p, dst, src, digests, info, src_name)
        elif p.name == "card.yaml":
            card_files.append(rel)
            continue  # written last: it pins the provenance file's sha256
        else:
            shutil.copyfile(p, dst)
        written.append(str(rel))
    for rel in card_files:
        _extend_card(src / rel, tmp / rel, info, src_name)
        written.append(str(rel))
    return written


def _refined_from(src: Path, file: Path, digests: dict[Path, str], src_name: str) -> dict[str, Any]:
    return {"dataset": src_name, "file": file.relative_to(src).as_posix(), "sha256": digests.get(file)}


def _extend_coco(path: Path, dst: Path, src: Path, digests, info, src_name) -> None:
    try:
        doc = json.loads(path.read_text())
        images = doc["images"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable COCO file ({e})") from e
    info_root = (doc.get("info") or {}).get("images_root") if isinstance(doc.get("info"), dict) else None
    if info_root:
        raise DataError(f"{path}: images live outside the dataset (info.images_root={info_root}); refine a dataset "
                        f"that holds its images")
    for im in images:
        f = path.parent / im["file_name"]
        im["refiner"] = dict(info)
        im["refined_from"] = _refined_from(src, f, digests, src_name)
    dst.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))


def _extend_provenance(path: Path, dst: Path, src: Path, digests, info, src_name) -> None:
    lines = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}:{k}: not a JSON line ({e})") from e
        f = path.parent / str(rec.get("file", ""))
        rec["kind"] = "refined"
        rec["refiner"] = dict(info)
        rec["refined_from"] = _refined_from(src, f, digests, src_name) if f.is_file() else {"dataset": src_name}
        lines.append(json.dumps(rec, sort_keys=True, ensure_ascii=True))
    dst.write_text("\n".join(lines) + ("\n" if lines else ""))


def _extend_card(path: Path, dst: Path, info, src_name) -> None:
    try:
        card = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: unreadable dataset card ({e})") from e
    if not isinstance(card, dict):
        raise DataError(f"{path}: a dataset card must be a mapping")
    card["name"] = f"{card.get('name', path.parent.name)}-refined"
    card["kind"] = "refined"
    card["refiner"] = dict(info)
    card["refined_from"] = src_name
    prov = card.get("provenance")
    if isinstance(prov, str) and (dst.parent / prov).is_file() and isinstance(card.get("sha256"), dict):
        card["sha256"][prov] = sha256_file(dst.parent / prov)
    dst.write_text(yaml.safe_dump(card, sort_keys=False, default_flow_style=False, allow_unicode=False))
