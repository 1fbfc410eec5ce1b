"""Load a page in headless Chromium over the DevTools protocol (no Playwright, no browser download).

Used to check that the FiftyOne App really serves a dataset: :func:`check_app` starts the system's
Chromium (``chromium`` / ``chromium-browser`` / ``google-chrome``, or ``$CHROMIUM``) headless with a
throwaway profile, opens the App's URL, waits until the page shows the dataset's samples (the media
requests of the grid succeed and the sample count appears in the page) and saves a screenshot.
The DevTools websocket is driven with ``aiohttp`` (already a dependency of the toolkit's stack).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["find_chromium", "check_app", "BrowserError"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """Chromium is missing, failed to start, or the page did not show what was expected."""


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


class _CDP:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.pending: dict[int, asyncio.Future] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        res = await asyncio.wait_for(fut, timeout)
        if "error" in res:
            raise BrowserError(f"DevTools {method} failed: {res['error']}")
        return res.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        res = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return (res.get("result") or {}).get("value")


_PAGE_STATE = """(() => {
  const text = document.body ? document.body.innerText : "";
  const imgs = Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length;
  const canvases = document.querySelectorAll("canvas").length;
  return {text: text.slice(0, 20000), images: imgs, canvases: canvases, title: document.title};
})()"""


async def _run(chromium: str, url: str, screenshot: Path, expect_text: list[str], min_media: int, timeout: float,
               width: int, height: int) -> dict[str, Any]:
    import aiohttp

    profile = tempfile.mkdtemp(prefix="vision-chromium-")
    args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--metrics-recording-only", "--mute-audio",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            f"--window-size={width},{height}", "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise BrowserError(f"{chromium} exited with code {proc.returncode} at start: {err}")
            if time.monotonic() > deadline:
                raise BrowserError(f"{chromium} did not open its DevTools port within 60 s")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [p for p in await r.json() if p.get("type") == "page"]
            if not pages:
                raise BrowserError("no page target in Chromium")
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _CDP(ws)
                await cdp.send("Page.enable")
                await cdp.send("Network.enable")
                await cdp.send("Runtime.enable")
                await cdp.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                      "deviceScaleFactor": 1, "mobile": False})
                await cdp.send("Page.navigate", {"url": url})
                t0 = time.monotonic()
                state: dict[str, Any] = {}
                ok_media: set[str] = set()
                failed: list[str] = []
                while time.monotonic() - t0 < timeout:
                    await asyncio.sleep(0.5)
                    for ev in cdp.events:
                        if ev["method"] == "Network.responseReceived":
                            resp = ev["params"]["response"]
                            if "/media?" in resp["url"] and resp.get("status") == 200:
                                ok_media.add(resp["url"])
                            elif resp.get("status", 200) >= 500:
                                failed.append(f"{resp['status']} {resp['url']}")
                    cdp.events.clear()
                    state = await cdp.evaluate(_PAGE_STATE) or {}
                    text = state.get("text", "")
                    if len(ok_media) >= min_media and all(t in text for t in expect_text):
                        break
                await asyncio.sleep(1.0)  # let the grid paint the thumbnails
                shot = await cdp.send("Page.captureScreenshot", {"format": "png"})
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                cdp.reader.cancel()
                text = state.get("text", "")
                return {"url": url, "screenshot": str(screenshot), "media_loaded": len(ok_media),
                        "media_urls": sorted(ok_media)[:50], "server_errors": failed[:20],
                        "found_text": {t: t in text for t in expect_text}, "page_text": text[:4000],
                        "seconds": round(time.monotonic() - t0, 2), "title": state.get("title")}
    finally:
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def check_app(url: str, screenshot: str | os.PathLike, *, expect_text: list[str] | None = None, min_media: int = 1,
              timeout: float = 90.0, chromium: str | None = None, width: int = 1400,
              height: int = 900) -> dict[str, Any]:
    """Open ``url`` in headless Chromium, wait for ``min_media`` sample images served by the App (``/media``
    responses with status 200) and every string of ``expect_text`` in the page, save a PNG screenshot.

    Returns what was seen (``media_loaded``, ``found_text``, ``page_text``...); the caller decides whether it
    is enough. :class:`BrowserError` when Chromium is missing or cannot start.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise BrowserError("no Chromium found (install Debian's `chromium` package, or set CHROMIUM=/path/to/it)")
    return asyncio.run(_run(exe, url, Path(screenshot), list(expect_text or []), min_media, timeout, width, height))
