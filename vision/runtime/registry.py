"""Edge bundles from the MLflow Model Registry: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
``models:/NAME/latest``.

``export.py`` registers every bundle that passed its parity gate as a model version and records the bundle's
``integrity`` hash (the hash of its ``bundle.json``, which lists every file's sha256) as the version tag
``bundle.integrity``. :func:`fetch` resolves the URI, downloads the version's artifacts into a local cache keyed
by model name and version, and accepts them only when the downloaded ``bundle.json`` carries exactly the
registered integrity hash *and* every file matches its sha256: a bundle whose files changed after registration
is refused (:class:`vision.runtime.bundle.BundleError`).

MLflow is needed only for these URIs (a plain folder needs nothing but the runtime): ``pip install mlflow-skinny``
for an MLflow server (``http://...``), ``pip install mlflow`` for a local ``sqlite:///`` store. The tracking URI
comes from the caller (``--tracking-uri``) or ``MLFLOW_TRACKING_URI``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vision.runtime.bundle import BUNDLE_FILE, BundleError

SCHEME = "models:/"
INTEGRITY_TAG = "bundle.integrity"   # model version tag: the integrity hash of the registered bundle.json
CACHE_ENV = "VISION_BUNDLE_CACHE"
_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+|latest)/?$")


def is_model_uri(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(SCHEME)


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None   # a number or "latest"

    def __str__(self) -> str:
        return f"{SCHEME}{self.name}@{self.alias}" if self.alias else f"{SCHEME}{self.name}/{self.version}"


def parse_model_uri(uri: str) -> ModelRef:
    m = _ALIAS.match(uri)
    if m:
        return ModelRef(m["name"], alias=m["alias"])
    m = _VERSION.match(uri)
    if m:
        return ModelRef(m["name"], version=m["version"])
    raise BundleError(f"{uri}: not a model URI; expected models:/NAME@ALIAS, models:/NAME/VERSION or "
                      f"models:/NAME/latest")


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vision" / "bundles"


def _import_mlflow():
    try:
        import mlflow  # noqa: F401
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts
    except ImportError as e:
        raise BundleError("loading a bundle by a models:/ URI needs MLflow, which is not installed here: "
                          "`pip install mlflow-skinny` (an MLflow server, http://...) or `pip install mlflow` "
                          f"(a local sqlite:/// store); a bundle folder needs neither ({e})") from e
    return MlflowClient, download_artifacts


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _resolve_version(client, ref: ModelRef, uri_label: str):
    from mlflow.exceptions import MlflowException

    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version == "latest":
            versions = client.search_model_versions(f"name='{ref.name}'")
            if not versions:
                raise BundleError(f"{ref}: registered model {ref.name!r} has no versions in {uri_label}")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as e:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        raise BundleError(f"{ref}: no {what} of registered model {ref.name!r} in {uri_label} "
                          f"({e.message if hasattr(e, 'message') else e})") from e


def _verify_registered(root: Path, ref: ModelRef, version: str, registered: str):
    """The bundle in ``root`` verifies (every sha256, its own integrity) and is the registered one."""
    from vision.runtime.bundle import load_bundle

    label = f"{ref} (version {version})"
    try:
        bundle = load_bundle(root)
    except BundleError as e:
        raise BundleError(f"{label}: the registered bundle was changed after registration; refusing it: {e}") from e
    if bundle.doc["integrity"] != registered:
        raise BundleError(f"{label}: {root / BUNDLE_FILE} has integrity {bundle.doc['integrity'][:16]}... but "
                          f"version {version} was registered with {registered[:16]}...: the bundle was changed "
                          f"after registration; refusing it")
    return bundle


def fetch(uri: str, tracking_uri: str | None = None, cache_dir: str | Path | None = None,
          registry_uri: str | None = None):
    """The verified :class:`~vision.runtime.bundle.Bundle` registered under ``uri`` (downloaded once per version
    into ``cache_dir``; a cached copy is re-verified on every load and replaced when it does not verify)."""
    ref = parse_model_uri(uri)
    client_cls, download_artifacts = _import_mlflow()
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise BundleError(f"{uri}: no MLflow tracking URI: give --tracking-uri (e.g. http://host:5000 or "
                          f"sqlite:///path/mlruns.db) or set MLFLOW_TRACKING_URI")
    registry_uri = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        client = client_cls(tracking_uri, registry_uri=registry_uri)
        mv = _resolve_version(client, ref, registry_uri)
    except BundleError:
        raise
    except Exception as e:  # noqa: BLE001 - an unreachable server, a missing database, ...
        raise BundleError(f"{uri}: cannot query the MLflow registry at {registry_uri}: {e}") from e
    registered = (mv.tags or {}).get(INTEGRITY_TAG)
    if not registered:
        raise BundleError(f"{ref} (version {mv.version}): the version has no {INTEGRITY_TAG!r} tag, so it was not "
                          f"registered by export.py and cannot be verified; refusing it")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache / _safe(ref.name) / f"v{mv.version}-{registered[:12]}"
    if (final / BUNDLE_FILE).is_file():
        try:
            bundle = _verify_registered(final, ref, mv.version, registered)
            bundle.source = f"{ref} (version {mv.version})"
            return bundle
        except BundleError:
            shutil.rmtree(final, ignore_errors=True)  # a damaged cache entry: fetched again below
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        try:
            src = client.get_model_version_download_uri(ref.name, mv.version)
            local = Path(download_artifacts(artifact_uri=src, dst_path=str(tmp), tracking_uri=tracking_uri))
        except Exception as e:  # noqa: BLE001
            raise BundleError(f"{ref} (version {mv.version}): cannot download its artifacts: {e}") from e
        if local.is_file():
            local = local.parent
        _verify_registered(local, ref, mv.version, registered)
        with contextlib.suppress(OSError):  # fails only when another process put the same version there first
            os.rename(local, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bundle = _verify_registered(final, ref, mv.version, registered)
    bundle.source = f"{ref} (version {mv.version})"
    return bundle


def add_registry_args(ap: argparse.ArgumentParser) -> None:
    """Options of every entry point that accepts ``models:/`` URIs (see :func:`open_bundle`)."""
    reg = ap.add_argument_group("registered bundles (models:/NAME@ALIAS, models:/NAME/VERSION)")
    reg.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI)")
    reg.add_argument("--cache-dir", default=None,
                     help="where registered bundles are downloaded (default: $VISION_BUNDLE_CACHE or "
                          "~/.cache/vision/bundles)")


def open_bundle(spec: str, args: argparse.Namespace):
    """The verified bundle named by a folder or a ``models:/`` URI: the one function all entry points use."""
    from vision.runtime.bundle import load_bundle

    bundle = load_bundle(spec, tracking_uri=getattr(args, "tracking_uri", None),
                         cache_dir=getattr(args, "cache_dir", None))
    if bundle.source:
        print(f"bundle: {bundle.source} -> {bundle.root}", file=sys.stderr)
    return bundle
