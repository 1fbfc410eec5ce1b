"""Edge bundles: ``bundle.json`` + ONNX files, checked before anything runs.

``bundle.json`` lists every file with its sha256 and carries an ``integrity`` hash of its own
canonical content, so a changed model file *or* a changed ``bundle.json`` is refused.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vision.runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
SCHEMA_VERSION = 1


class BundleError(Exception):
    """The bundle is incomplete, tampered with, or not of a supported kind (message names the file)."""


def canonical_hash(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "integrity"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    root: Path
    doc: dict[str, Any]
    source: str | None = None   # where it came from when not a plain folder (e.g. "models:/NAME@ALIAS (version 3)")

    @property
    def task(self) -> str:
        return self.doc["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.doc["labels"])

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.doc["preprocess"])

    @property
    def precisions(self) -> list[str]:
        return sorted(self.doc["models"])

    def model_path(self, precision: str) -> Path:
        models = self.doc["models"]
        if precision not in models:
            raise BundleError(f"{self.root / BUNDLE_FILE}: no {precision!r} model (has {sorted(models)})")
        return self.root / models[precision]["file"]

    def input_spec(self, precision: str) -> dict[str, Any]:
        return self.doc["models"][precision]["input"]


def load_bundle(path: str | Path, verify: bool = True, *, tracking_uri: str | None = None,
                cache_dir: str | Path | None = None) -> Bundle:
    """Read a bundle folder (or its ``bundle.json``) and verify every checksum.

    ``path`` may also be a registered model, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: it is fetched
    through MLflow (``tracking_uri`` or ``MLFLOW_TRACKING_URI``) into ``cache_dir`` and must match the integrity
    hash recorded at registration (:mod:`vision.runtime.registry`); such bundles are always verified.
    """
    if isinstance(path, str) and path.startswith("models:/"):
        from vision.runtime.registry import fetch

        return fetch(path, tracking_uri=tracking_uri, cache_dir=cache_dir)
    root = Path(path)
    if root.is_file() and root.name == BUNDLE_FILE:
        root = root.parent
    meta = root / BUNDLE_FILE
    if not meta.is_file():
        raise BundleError(f"{meta}: not found (is {root} an edge bundle folder?)")
    try:
        doc = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{meta}: unreadable ({e})") from e
    for key in ("schema_version", "task", "labels", "preprocess", "models", "files", "integrity"):
        if key not in doc:
            raise BundleError(f"{meta}: missing field {key!r}")
    if doc["schema_version"] > SCHEMA_VERSION:
        raise BundleError(f"{meta}: schema version {doc['schema_version']} is newer than this runtime supports")
    if verify:
        if canonical_hash(doc) != doc["integrity"]:
            raise BundleError(f"{meta}: integrity check failed: bundle.json was modified after export")
        for name, info in doc["files"].items():
            f = root / name
            if not f.is_file():
                raise BundleError(f"{f}: file listed in bundle.json is missing")
            if _sha256(f) != info["sha256"]:
                raise BundleError(f"{f}: sha256 mismatch: the file was modified after export; refusing to run it")
    return Bundle(root, doc)


def create_session(model_path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
    """An ONNX Runtime session on the available providers of ``providers``, in that order (CPU by default).

    A provider asked for but absent from this onnxruntime build (``CUDAExecutionProvider`` with the CPU-only
    ``onnxruntime`` package), or one that fails to start (no CUDA libraries), is dropped with a warning that says
    where the model runs instead; none left is an error."""
    import onnxruntime as ort

    wanted = list(providers or ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise BundleError(f"none of the execution providers {wanted} is available here (available: {available})")
    missing = [p for p in wanted if p not in available]
    if missing:
        log.warning("warning: execution provider(s) %s not in this onnxruntime build (it has %s); %s runs on %s",
                    ", ".join(missing), ", ".join(available), Path(model_path).name, ", ".join(chosen))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), sess_options=opts, providers=chosen)
    failed = [p for p in chosen if p not in session.get_providers()]
    if failed:
        log.warning("warning: execution provider(s) %s failed to start; %s runs on %s", ", ".join(failed),
                    Path(model_path).name, ", ".join(session.get_providers()))
    return session
