"""Edge bundles from the MLflow Model Registry: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
``models:/NAME/latest``.

``export.py`` registers every bundle that passed its parity gate as a model version and records the bundle's
``integrity`` hash (the hash of its ``bundle.json``, which lists every file's sha256) as the version tag
``bundle.integrity``. :func:`fetch` resolves the URI, downloads the version's artifacts into a local cache keyed
by model name and version, and accepts them only when the downloaded ``bundle.json`` carries exactly the
registered integrity hash *and* every file matches its sha256: a bundle whose files changed after registration
is refused (:class:`vision.runtime.bundle.BundleError`).

MLflow itself is not needed on the device: an MLflow server (``http://``, ``https://``; ``MLFLOW_TRACKING_TOKEN`` or
``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` for authentication) is read through its REST API and its proxied
artifacts (``mlflow-artifacts:``), a local ``sqlite:///`` store read-only with the standard library's sqlite3 (its
bundle folders must be on this machine). Any other store (PostgreSQL, ...): serve it with ``mlflow server``. The
tracking URI comes from the caller (``--tracking-uri``) or ``MLFLOW_TRACKING_URI``.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import posixpath
import re
import shutil
import sqlite3
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
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


class _RestRegistry:
    """The model registry of an MLflow server through its REST API (``urllib`` only): versions, aliases, tags,
    and the version's files through the server's proxied artifact service (``mlflow-artifacts:``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.label = self.url
        self._headers = {"User-Agent": "vision-runtime"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            self._headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _open(self, url: str):
        req = urllib.request.Request(url, headers=self._headers)
        try:
            return urllib.request.urlopen(req, timeout=float(os.environ.get("VISION_REGISTRY_TIMEOUT", "60")))
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
            try:
                err = json.loads(body)
            except ValueError:
                err = {}
            message = (err.get("message") if isinstance(err, dict) else None) or body[:300]
            if e.code == 404 or (isinstance(err, dict) and err.get("error_code") == "RESOURCE_DOES_NOT_EXIST"):
                raise _NotFound(message) from None
            raise BundleError(f"{url}: HTTP {e.code}: {message}") from None
        except (urllib.error.URLError, OSError) as e:
            raise BundleError(f"cannot reach the MLflow server at {self.url}: {getattr(e, 'reason', e)}") from None

    def _get(self, endpoint: str, **params) -> dict:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        with self._open(f"{self.url}/api/2.0/mlflow/{endpoint}?{query}") as r:
            try:
                return json.loads(r.read())
            except ValueError as e:
                raise BundleError(f"{self.url}: {endpoint} did not answer JSON; is this an MLflow server?") from e

    @staticmethod
    def _version(doc: dict) -> _Version:
        tags = {t["key"]: t.get("value", "") for t in doc.get("tags", [])}
        return _Version(str(doc["version"]), tags, doc.get("source", ""))

    def version(self, ref: ModelRef) -> _Version:
        if ref.alias:
            return self._version(self._get("registered-models/alias", name=ref.name, alias=ref.alias)["model_version"])
        if ref.version != "latest":
            return self._version(self._get("model-versions/get", name=ref.name, version=ref.version)["model_version"])
        versions, token = [], None
        while True:
            page = self._get("model-versions/search", filter=f"name='{ref.name}'", max_results=1000,
                             page_token=token)
            versions += page.get("model_versions", [])
            token = page.get("next_page_token")
            if not token:
                break
        if not versions:
            raise _NotFound(f"registered model {ref.name!r} has no versions")
        return self._version(max(versions, key=lambda v: int(v["version"])))

    def download(self, ref: ModelRef, version: _Version, dst: Path) -> None:
        uri = self._get("model-versions/get-download-uri", name=ref.name, version=version.number)["artifact_uri"]
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "mlflow-artifacts":
            base = f"{urllib.parse.urlparse(self.url).scheme}://{parsed.netloc}" if parsed.netloc else self.url
            self._download_tree(f"{base}/api/2.0/mlflow-artifacts/artifacts", parsed.path.strip("/"), dst)
        elif parsed.scheme in ("", "file"):
            _copy_local(uri, dst)
        else:
            raise BundleError(f"{ref} (version {version.number}): its files are at {uri}, which the runtime cannot "
                              f"read; serve them through the MLflow server (`mlflow server` proxies artifacts by "
                              f"default: mlflow-artifacts:/...) or copy the bundle folder to the device")

    def _download_tree(self, api: str, path: str, dst: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        with self._open(f"{api}?{urllib.parse.urlencode({'path': path})}") as r:
            files = json.loads(r.read()).get("files", [])
        for f in files:
            name = posixpath.basename(f["path"])
            if name in ("", ".", "..") or "/" in name or "\\" in name:
                raise BundleError(f"{api}: refusing the artifact name {f['path']!r}")
            sub = f"{path}/{name}" if path else name
            if f.get("is_dir"):
                self._download_tree(api, sub, dst / name)
                continue
            with self._open(f"{api}/{urllib.parse.quote(sub)}") as r, open(dst / name, "wb") as out:
                shutil.copyfileobj(r, out, 1 << 20)


class _SqliteRegistry:
    """The model registry of a local MLflow SQLite store, read with the standard library (read-only)."""

    def __init__(self, uri: str) -> None:
        path = Path(urllib.parse.unquote(uri[len("sqlite:///"):]))
        self.label = uri
        if not path.is_file():
            raise BundleError(f"{uri}: no MLflow database at {path}")
        try:
            self._db = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=30)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(model_versions)")}
        except sqlite3.Error as e:
            raise BundleError(f"{uri}: cannot read the MLflow database ({e})") from None
        if not cols:
            raise BundleError(f"{uri}: the database has no model registry (no model_versions table)")
        self._ws = " AND workspace = 'default'" if "workspace" in cols else ""
        self._loc = "storage_location" if "storage_location" in cols else "NULL"

    def _rows(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise BundleError(f"{self.label}: cannot read the MLflow database ({e})") from None

    def _one(self, sql: str, args: tuple):
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def version(self, ref: ModelRef) -> _Version:
        live = f"current_stage IS NOT '{_DELETED}'{self._ws}"
        if ref.alias:
            row = self._one(f"SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?{self._ws}",
                            (ref.name, ref.alias))
            if row is None:
                raise _NotFound(f"no alias {ref.alias!r}")
            number = row[0]
        elif ref.version == "latest":
            row = self._one(f"SELECT MAX(version) FROM model_versions WHERE name = ? AND {live}", (ref.name,))
            if row is None or row[0] is None:
                raise _NotFound(f"registered model {ref.name!r} has no versions")
            number = row[0]
        else:
            number = int(ref.version)
        row = self._one(f"SELECT version, source, {self._loc} FROM model_versions WHERE name = ? AND version = ? "
                        f"AND {live}", (ref.name, number))
        if row is None:
            raise _NotFound(f"no version {number}")
        tags = dict(self._rows(f"SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?{self._ws}",
                               (ref.name, number)))
        return _Version(str(row[0]), tags, row[2] or row[1] or "")

    def download(self, ref: ModelRef, version: _Version, dst: Path) -> None:
        parsed = urllib.parse.urlparse(version.source)
        if parsed.scheme not in ("", "file"):
            raise BundleError(f"{ref} (version {version.number}): its files are at {version.source}; load it "
                              f"through the MLflow server that serves them (--tracking-uri http://...)")
        _copy_local(version.source, dst)


_DELETED = "Deleted_Internal"  # MLflow's stage of a deleted model version


class _NotFound(BundleError):
    pass


@dataclass(frozen=True)
class _Version:
    number: str
    tags: dict
    source: str


def _copy_local(uri: str, dst: Path) -> None:
    parsed = urllib.parse.urlparse(uri)
    src = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri)
    if not src.is_dir():
        raise BundleError(f"{uri}: the registered bundle folder is not on this machine")
    shutil.copytree(src, dst, dirs_exist_ok=True)


def _registry(uri: str):
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        return _RestRegistry(uri)
    if uri.startswith("sqlite:///"):
        return _SqliteRegistry(uri)
    raise BundleError(f"{uri}: the runtime reads a model registry from an MLflow server (http://, https://) or a "
                      f"local sqlite:/// store; serve any other store with `mlflow server --backend-store-uri {uri}` "
                      f"and give its http:// address")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


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
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise BundleError(f"{uri}: no MLflow tracking URI: give --tracking-uri (e.g. http://host:5000 or "
                          f"sqlite:///path/mlruns.db) or set MLFLOW_TRACKING_URI")
    registry_uri = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
    registry = _registry(registry_uri)
    try:
        mv = registry.version(ref)
    except _NotFound as e:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        raise BundleError(f"{ref}: no {what} of registered model {ref.name!r} in {registry.label} ({e})") from None
    registered = mv.tags.get(INTEGRITY_TAG)
    if not registered:
        raise BundleError(f"{ref} (version {mv.number}): the version has no {INTEGRITY_TAG!r} tag, so it was not "
                          f"registered by export.py and cannot be verified; refusing it")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache / _safe(ref.name) / f"v{mv.number}-{registered[:12]}"
    label = f"{ref} (version {mv.number})"
    if (final / BUNDLE_FILE).is_file():
        try:
            bundle = _verify_registered(final, ref, mv.number, registered)
            bundle.source = label
            return bundle
        except BundleError:
            shutil.rmtree(final, ignore_errors=True)  # a damaged cache entry: fetched again below
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        local = tmp / "bundle"
        try:
            registry.download(ref, mv, local)
        except BundleError as e:
            raise BundleError(f"{label}: cannot download its files: {e}") from None
        _verify_registered(local, ref, mv.number, registered)
        with contextlib.suppress(OSError):  # fails only when another process put the same version there first
            os.rename(local, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bundle = _verify_registered(final, ref, mv.number, registered)
    bundle.source = label
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
