"""Writers for the image-level snapshot formats: Market-1501 (re-id) and class folders (classification).

Both write a ``provenance.jsonl`` (one ``{"file": relpath, ...meta}`` record per image) and a
``card.yaml`` beside the images, which :class:`~vision.data.reid.MarketSource` and
:class:`~vision.data.readers.ImageFolderSource` read back, so every sample field (licence, kind,
generator parameters, split, sequence...) survives the round trip.

Market-1501 file names carry the identity and camera: ``{id:04d}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg``
(``-1`` for junk). A sample keeps its original file name when it still matches its (possibly edited)
identity and camera; otherwise the name is rebuilt from the sample's ``identity``, ``camera``,
``sequence``, ``frame`` and ``box``. The ``role`` picks the folder (train -> ``bounding_box_train``,
query -> ``query``, gallery -> ``bounding_box_test``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import yaml

from vision.data.samples import Sample
from vision.errors import DataError

__all__ = ["write_market", "write_class_folders", "market_name"]

ROLE_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_DERIVED = ("identity", "camera", "role", "junk", "distractor")  # from the file name / folder when read back


def _place(src: str, dst: Path, images: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        raise DataError(f"two samples would be written to {dst}")
    if images == "copy":
        shutil.copy2(src, dst)
    elif images == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        raise DataError(f"images must be 'copy' or 'symlink', got {images!r}")


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _card(samples: Sequence[Sample], task: str, fmt: str, name: str) -> dict[str, Any]:
    licences = sorted({str(s.meta.get("licence", "unknown")) for s in samples})
    kinds = sorted({str(s.meta.get("kind", "real")) for s in samples})
    card: dict[str, Any] = {"name": name, "task": task, "format": fmt,
                            "licence": licences[0] if len(licences) == 1 else "mixed (see provenance.jsonl)",
                            "licences": licences, "kinds": kinds}
    if kinds == ["synthetic"] or kinds == ["refined"]:
        card["real"] = False
    return card


def market_name(identity: str, camera: Any, sequence: Any, frame: Any, box: Any, suffix: str = ".jpg") -> str:
    """The Market-1501 file name of one crop; ValueError when a part is missing or not a number."""
    try:
        pid = -1 if str(identity) in ("-1", "junk") else int(str(identity))
        cam, seq, frm, bx = int(camera), int(sequence if sequence is not None else 1), int(frame), int(
            box if box is not None else 1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"identity {identity!r}, camera {camera!r}, sequence {sequence!r}, frame {frame!r}, "
                         f"box {box!r} do not make a Market-1501 file name ({e})") from e
    head = "-1" if pid < 0 else f"{pid:04d}"
    return f"{head}_c{cam}s{seq}_{frm:06d}_{bx:02d}{suffix}"


def write_market(samples: Sequence[Sample], out_dir: str | Path, *, images: str = "copy",
                 name: str = "snapshot") -> Path:
    """Write re-id crops as a Market-1501 folder (see the module docstring); returns ``out_dir``."""
    from vision.data.reid import parse_market

    out = Path(out_dir)
    records = []
    for s in samples:
        m = s.meta
        where = f"sample {s.source}:{s.relpath} ({s.path})"
        role = m.get("role")
        if role not in ROLE_FOLDERS:
            raise DataError(f"{where}: role {role!r} has no Market-1501 folder (train, query or gallery)")
        ident, cam = m.get("identity"), m.get("camera")
        if ident is None or cam is None:
            raise DataError(f"{where}: Market-1501 needs its identity and camera (got {ident!r}, {cam!r})")
        fname = Path(s.relpath).name
        try:
            parsed = parse_market(fname)
            keep = parsed["identity"] == str(ident) and str(parsed["camera"]) == str(cam)
        except ValueError:
            keep = False
        if not keep:
            try:
                fname = market_name(str(ident), cam, m.get("sequence"), m.get("frame", 0), m.get("box"),
                                    Path(s.path).suffix or ".jpg")
            except ValueError as e:
                raise DataError(f"{where}: {e}") from e
        rel = f"{ROLE_FOLDERS[role]}/{fname}"
        _place(s.path, out / rel, images)
        records.append({"file": rel, **{k: _jsonable(v) for k, v in m.items() if k not in _DERIVED}})
    (out / "provenance.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    (out / "card.yaml").write_text(yaml.safe_dump(_card(samples, "reid", "Market-1501", name), sort_keys=True))
    return out


def write_class_folders(samples: Sequence[Sample], out_dir: str | Path, *, images: str = "copy",
                        name: str = "snapshot") -> Path:
    """Write ``out_dir/<label>/<source>__<relpath with / as __>`` plus provenance and card; returns ``out_dir``."""
    out = Path(out_dir)
    records = []
    for s in samples:
        if not s.label or "/" in s.label or s.label.startswith("."):
            raise DataError(f"sample {s.source}:{s.relpath}: label {s.label!r} cannot be a class folder name")
        rel = f"{s.label}/{s.source}__" + s.relpath.replace("\\", "/").replace("/", "__")
        _place(s.path, out / rel, images)
        records.append({"file": rel, **{k: _jsonable(v) for k, v in s.meta.items()}})
    (out / "provenance.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    (out / "card.yaml").write_text(yaml.safe_dump(_card(samples, "classification", "class folders", name),
                                                  sort_keys=True))
    return out
