"""Writing edge bundles atomically: a bundle folder appears complete or not at all."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from vision.runtime.bundle import BUNDLE_FILE, SCHEMA_VERSION, canonical_hash
from vision.utils.io import atomic_directory, atomic_write_json, sha256_file


def write_bundle(dest: str | Path, files: dict[str, Path], doc: dict[str, Any]) -> Path:
    """Copy ``files`` (bundle name -> source path) and write ``bundle.json`` with checksums + integrity."""
    dest = Path(dest)
    with atomic_directory(dest) as tmp:
        listing = {}
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
            listing[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        full = {"schema_version": SCHEMA_VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **doc, "files": listing}
        full["integrity"] = canonical_hash(full)
        atomic_write_json(tmp / BUNDLE_FILE, full)
    return dest
