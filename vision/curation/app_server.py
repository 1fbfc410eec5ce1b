"""The FiftyOne App server, started so that it runs with this environment's Starlette.

FiftyOne 1.13's server (``fiftyone/server/app.py``) registers its startup / shutdown handlers with
``Starlette.on_event``, which Starlette 1.0 removed (this environment has Starlette >= 1.6, required by
FastAPI, which MLflow uses), and hands ``pathlib.Path`` objects to ``StaticFiles.lookup_path``, which
Starlette 1.x treats as strings. :func:`patch_starlette` puts back an equivalent ``on_event`` that runs
the handlers from the application's lifespan and coerces those paths; it does nothing when Starlette
still has ``on_event`` (Starlette < 1.0, where FiftyOne works as it is).

``python -m vision.curation.app_server --port 5151 [--address 127.0.0.1] [--parent PID]`` applies the
patch, configures FiftyOne's database (:mod:`vision.curation.db`, the environment decides which) and
serves the App like ``fiftyone/server/main.py``. With ``--parent``, it exits when that process is gone,
so a killed ``action=app`` never leaves a server behind. :func:`start` runs it as a child process and
waits until it answers.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

__all__ = ["patch_starlette", "start", "wait_until_serving", "main"]


def patch_starlette() -> bool:
    """Give ``Starlette`` an ``on_event(kind)`` decorator again (Starlette >= 1.0); True if patched."""
    from starlette.applications import Starlette

    if hasattr(Starlette, "on_event"):
        return False

    def on_event(self, event_type: str):
        if event_type not in ("startup", "shutdown"):
            raise ValueError(f"unknown lifespan event {event_type!r}")
        handlers = self.__dict__.setdefault("_vision_event_handlers", {"startup": [], "shutdown": []})
        router = self.router
        if not getattr(router, "_vision_lifespan", False):
            inner = router.lifespan_context

            @contextlib.asynccontextmanager
            async def lifespan(app):
                for fn in handlers["startup"]:
                    res = fn()
                    if hasattr(res, "__await__"):
                        await res
                async with inner(app) as state:
                    yield state
                for fn in handlers["shutdown"]:
                    res = fn()
                    if hasattr(res, "__await__"):
                        await res

            router.lifespan_context = lifespan
            router._vision_lifespan = True

        def register(fn):
            handlers[event_type].append(fn)
            return fn

        return register

    Starlette.on_event = on_event
    _patch_static_paths()
    return True


def _patch_static_paths() -> None:
    """FiftyOne's static-file app passes ``pathlib.Path`` objects to ``StaticFiles.lookup_path``, which
    Starlette >= 1.0 treats as ``str`` (``path.startswith``): coerce them."""
    from starlette.staticfiles import StaticFiles

    orig = StaticFiles.lookup_path
    if getattr(orig, "_vision_fspath", False):
        return

    def lookup_path(self, path):
        return orig(self, os.fspath(path))

    lookup_path._vision_fspath = True  # type: ignore[attr-defined]
    StaticFiles.lookup_path = lookup_path
    _patch_file_response()


def _patch_file_response() -> None:
    """FiftyOne builds ``FileResponse(..., method=...)``; Starlette >= 1.0 has no ``method`` argument."""
    import inspect

    from starlette.responses import FileResponse

    init = FileResponse.__init__
    if "method" in inspect.signature(init).parameters or getattr(init, "_vision_no_method", False):
        return

    def __init__(self, *args, method=None, **kwargs):
        init(self, *args, **kwargs)

    __init__._vision_no_method = True  # type: ignore[attr-defined]
    FileResponse.__init__ = __init__


def _watch_parent(pid: int) -> None:
    def loop() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass
            time.sleep(1.0)

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def server_version(address: str, port: int, timeout: float = 2.0) -> str | None:
    """The FiftyOne version the server on ``address:port`` reports, or None when nothing answers."""
    import json

    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/fiftyone", timeout=timeout) as r:
            return json.loads(r.read().decode()).get("version")
    except Exception:  # noqa: BLE001 - nothing (valid) serving there yet
        return None


def wait_until_serving(address: str, port: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = server_version(address, port)
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the FiftyOne App server exited with code {proc.returncode} before serving on "
                               f"{address}:{port}")
        time.sleep(0.3)
    raise RuntimeError(f"the FiftyOne App server did not answer on {address}:{port} within {timeout:.0f} s")


def start(port: int, address: str = "127.0.0.1", log_file: str | None = None,
          timeout: float = 120.0) -> subprocess.Popen:
    """Start the server as a child process (it exits with this process) and wait until it serves."""
    from vision.errors import ConfigError

    if server_version(address, port):
        raise ConfigError(f"a FiftyOne App server already answers on {address}:{port}; choose another app.port")
    out: Any = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", "vision.curation.app_server", "--port", str(port),
                             "--address", address, "--parent", str(os.getpid())],
                            stdout=out, stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL,
                            env={**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"})
    try:
        wait_until_serving(address, port, proc, timeout)
    except RuntimeError:
        proc.terminate()
        raise
    return proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vision.curation.app_server", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=5151)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    args = ap.parse_args(argv)
    if args.parent:
        _watch_parent(args.parent)
    patch_starlette()
    from vision.curation.db import configure_fiftyone

    configure_fiftyone()
    os.environ.pop("FIFTYONE_DISABLE_SERVICES", None)
    os.environ["FIFTYONE_SERVER"] = "1"
    import fiftyone as fo

    fo.config.database_validation = False
    from fiftyone.server.main import start_server

    start_server(port=args.port, address=args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
