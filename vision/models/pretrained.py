"""Loading user-supplied weights: a local path or a URL the user names (never a hub default)."""
from __future__ import annotations

import hashlib
import logging
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from torch import nn

from vision.errors import CheckpointError
from vision.utils.io import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)
CACHE = Path.home() / ".cache" / "vision" / "weights"


def resolve(spec: str, sha256: str | None = None, cache_dir: Path | None = None) -> Path:
    """A local path as is; ``file://`` / ``http(s)://`` URLs are downloaded once into a cache."""
    parsed = urllib.parse.urlparse(str(spec))
    if parsed.scheme in ("", "file") and not parsed.netloc:
        path = Path(parsed.path if parsed.scheme == "file" else spec).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{path}: pretrained weights file not found")
    else:
        cache = Path(cache_dir or CACHE)
        path = cache / (hashlib.sha256(spec.encode()).hexdigest()[:16] + "-" + Path(parsed.path).name)
        if not path.is_file():
            log.info("downloading pretrained weights from %s", spec)
            try:
                with urllib.request.urlopen(spec) as r:
                    atomic_write_bytes(path, r.read())
            except OSError as e:
                raise CheckpointError(f"{spec}: could not download pretrained weights ({e})") from e
    if sha256 and sha256_file(path) != sha256.lower():
        raise CheckpointError(f"{path}: sha256 does not match the configured pretrained_sha256")
    return path


def load_into(model: nn.Module, spec: str, sha256: str | None = None, prefix: str | None = None) -> dict:
    """Load matching tensors into ``model``; keys of another shape (e.g. the head) are skipped and reported."""
    path = resolve(spec, sha256)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/format error is reported with the file
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({e})") from e
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state_dict or a checkpoint with 'state_dict'")
    for p in ([prefix] if prefix else ["model.", "backbone.", "module."]):
        if any(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
            break
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if not matched:
        raise CheckpointError(f"{path}: no tensor fits the model (wrong architecture?)")
    model.load_state_dict(matched, strict=False)
    report = {"file": str(path), "loaded": len(matched), "skipped_shape": skipped,
              "missing": sorted(set(own) - set(matched))}
    log.info("pretrained: loaded %d tensors from %s (skipped %d of another shape, %d left at init)",
             len(matched), path, len(skipped), len(report["missing"]))
    return report
