"""Dataset cards (``datasets/*.yaml``): source, licence, format, counts, checksums and location.

A card's ``checksums`` file (sha256sum format, paths relative to the dataset root) pins the exact
files. ``verify`` checks a local copy against it; ``fetch`` downloads the card's archive, checks its
sha256, unpacks it atomically and verifies every file.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

from vision.errors import DataError
from vision.utils.io import atomic_directory, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[2]
CARDS_DIR = REPO_ROOT / "datasets"


def card_path(name: str, cards_dir: Path | None = None) -> Path:
    return Path(cards_dir or CARDS_DIR) / f"{name}.yaml"


def load_card(name: str, cards_dir: Path | None = None) -> dict[str, Any]:
    path = card_path(name, cards_dir)
    if not path.is_file():
        known = sorted(p.stem for p in Path(cards_dir or CARDS_DIR).glob("*.yaml"))
        raise DataError(f"{path}: no dataset card named {name!r} (known cards: {', '.join(known) or 'none'})")
    try:
        card = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{path}: unreadable dataset card ({e})") from e
    for key in ("name", "task", "source", "licence", "format"):
        if key not in card:
            raise DataError(f"{path}: dataset card lacks the required field {key!r}")
    card["_card_file"] = str(path)
    return card


def read_checksums(card: dict[str, Any]) -> dict[str, str]:
    """relative path -> sha256 from the card's checksum file (``sha256  relpath`` lines)."""
    name = card.get("checksums")
    if not name:
        return {}
    path = Path(card["_card_file"]).parent / name
    if not path.is_file():
        raise DataError(f"{path}: checksum file named by card {card['name']!r} is missing")
    sums: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{path}:{lineno}: expected '<sha256>  <relative path>', got {line!r}")
        sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def verify(card: dict[str, Any], root: str | Path, *, allow_extra: bool = False) -> int:
    """Check every file of the card under ``root``; returns the number of files checked."""
    root = Path(root)
    sums = read_checksums(card)
    if not sums:
        return 0
    problems: list[str] = []
    for rel, digest in sums.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{p}: checksum mismatch (the file differs from the card's copy)")
    if not allow_extra:
        listed = set(sums)
        top = {Path(r).parts[0] for r in listed}
        for sub in sorted(top):
            d = root / sub
            if d.is_dir():
                for f in sorted(d.rglob("*")):
                    rel = f.relative_to(root).as_posix()
                    if f.is_file() and rel not in listed:
                        problems.append(f"{f}: not listed in the card's checksums")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"dataset {card['name']!r} at {root} does not match its card "
                        f"({card['_card_file']}):\n  {shown}{more}")
    return len(sums)


def local_root(card: dict[str, Any], data_root: str | Path | None = None) -> Path:
    """Where the card's data lives here: ``data_root/<folder>`` or the card's repo-relative path."""
    loc = card.get("location", {}) or {}
    if data_root is not None and loc.get("folder"):
        return Path(data_root) / loc["folder"]
    if loc.get("local"):
        return (REPO_ROOT / loc["local"]).resolve()
    raise DataError(f"{card['_card_file']}: the card names no local location")


def fetch(card: dict[str, Any], dest: str | Path, *, progress: bool = True) -> Path:
    """Download the card's archive, check its sha256, unpack into ``dest`` atomically, verify files.

    Works with any URL urllib opens (``https://``, ``file://``). ``dest`` must not exist yet.
    """
    dl = card.get("download") or {}
    url, digest = dl.get("url"), dl.get("sha256")
    if not url or not digest:
        raise DataError(f"{card['_card_file']}: no download url/sha256; obtain the data from "
                        f"{card.get('homepage', 'its publisher')} and point the recipe at it")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="vision-fetch-") as tmp:
        archive = Path(tmp) / (Path(url).name or "archive")
        try:
            with urllib.request.urlopen(url) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise DataError(f"{url}: download failed ({e})") from e
        got = sha256_file(archive)
        if got != digest.lower():
            raise DataError(f"{url}: archive sha256 is {got}, the card {card['_card_file']} expects {digest}")
        with atomic_directory(dest) as out:
            _unpack(archive, out, strip=int(dl.get("strip_components", 0)))
            verify(card, out, allow_extra=bool(dl.get("allow_extra", False)))
    return dest


def _unpack(archive: Path, out: Path, strip: int) -> None:
    def target(name: str) -> Path | None:
        parts = Path(name).parts[strip:]
        if not parts:
            return None
        p = (out / Path(*parts)).resolve()
        if not str(p).startswith(str(out.resolve())):
            raise DataError(f"{archive}: member {name!r} escapes the destination folder")
        return p

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                t = target(info.filename)
                if t is None or info.is_dir():
                    continue
                t.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(t, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                t = target(m.name)
                if t is None or not m.isfile():
                    continue
                t.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                assert src is not None
                with src, open(t, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    else:
        raise DataError(f"{archive}: not a zip or tar archive")


def summary(cards: list[dict[str, Any]]) -> dict[str, Any]:
    """Compact dataset summary for tracking: sources, licences, counts."""
    return {
        c["name"]: {
            "licence": c.get("licence"),
            "source": c.get("source"),
            "counts": c.get("counts"),
            "root": c.get("_root"),
            **({"snapshot": c.get("snapshot"), "snapshot_id": c["snapshot_id"]} if c.get("snapshot_id") else {}),
        }
        for c in cards
    }
