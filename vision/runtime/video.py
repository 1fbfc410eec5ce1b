"""Frame sources and annotated output for the runtime (numpy + OpenCV headless + Pillow).

    with open_source("clip.mp4", every_n=2, max_frames=100) as src:
        for index, time_s, rgb in src:          # HxWx3 uint8 RGB
            ...

Sources: an image file, a folder of images (sorted, recursive), a video file (``cv2.VideoCapture``)
or a stream: ``rtsp://``/``rtmp://``/``http(s)://`` URLs and integer camera indices (``0``).
A source that cannot be opened raises :class:`SourceError` naming it. Frames come as
:class:`Frame` tuples ``(index, time_s, rgb)`` with ``path``, ``error`` and ``read_ms`` attributes.

:class:`VideoWriter` writes an mp4 (``mp4v``) to a temporary name and renames it into place on
:meth:`VideoWriter.close`, so a half-written video never looks complete; :func:`annotate` draws
boxes + labels + scores, zone polygons with their occupancy and counting lines with their counts.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vision.runtime.preprocess import IMAGE_EXTENSIONS, ImageReadError, read_image

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
DEFAULT_IMAGE_FPS = 5.0  # what an annotated video of still images plays at


class SourceError(ValueError):
    """A frame source cannot be found or opened (the message names it)."""


def _cv2():
    import cv2

    return cv2


class Frame(tuple):
    """``(index, time_s, rgb)`` plus ``path`` (image sources), ``error`` (an unreadable image:
    ``rgb`` is None) and ``read_ms`` (how long reading + decoding took)."""

    def __new__(cls, index: int, time_s: float, rgb: np.ndarray | None, path: str | None = None,
                error: str | None = None, read_ms: float = 0.0) -> "Frame":
        obj = super().__new__(cls, (index, time_s, rgb))
        obj.path, obj.error, obj.read_ms = path, error, read_ms
        return obj

    frame_index = property(lambda self: self[0])
    time_s = property(lambda self: self[1])
    rgb = property(lambda self: self[2])


def is_stream(spec: str | int) -> bool:
    return isinstance(spec, int) or str(spec).isdigit() or str(spec).lower().startswith(STREAM_PREFIXES)


def source_kind(spec: str | int | Path) -> str:
    """``image`` | ``folder`` | ``video`` | ``stream`` for an input spec (SourceError if it does not exist)."""
    if isinstance(spec, int) or str(spec).lower().startswith(STREAM_PREFIXES):
        return "stream"
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if p.exists():
        return "image" if p.suffix.lower() in IMAGE_EXTENSIONS else "video"
    if str(spec).isdigit():  # a camera index (a file of that name wins)
        return "stream"
    raise SourceError(f"{p}: input not found")


class FrameSource:
    """Base: iterate ``Frame``s; ``every_n`` keeps every n-th frame (index counts all frames),
    ``max_frames`` stops after that many yielded frames."""

    kind = "?"

    def __init__(self, name: str, every_n: int = 1, max_frames: int | None = None) -> None:
        if int(every_n) < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        if max_frames is not None and int(max_frames) < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        self.name = name
        self.every_n = int(every_n)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.fps: float | None = None

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        n = 0
        if self.max_frames == 0:
            return
        for f in self._frames():
            yield f
            n += 1
            if self.max_frames is not None and n >= self.max_frames:
                break

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageSource(FrameSource):
    """One image file or a folder of images (sorted by relative path); frame index = position,
    time = index / :data:`DEFAULT_IMAGE_FPS`. ``on_error="report"`` yields unreadable images as
    frames with ``rgb=None`` and ``error`` set; ``"raise"`` raises :class:`ImageReadError`."""

    def __init__(self, spec: str | Path, every_n: int = 1, max_frames: int | None = None,
                 on_error: str = "raise") -> None:
        super().__init__(str(spec), every_n, max_frames)
        if on_error not in ("raise", "report"):
            raise ValueError(f"on_error must be 'raise' or 'report', got {on_error!r}")
        p = Path(spec)
        if p.is_dir():
            self.kind = "folder"
            self.files = sorted((f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                                key=lambda f: f.relative_to(p).as_posix())
        elif p.is_file():
            self.kind = "image"
            self.files = [p]
        else:
            raise SourceError(f"{p}: input not found")
        self.on_error = on_error
        self.fps = DEFAULT_IMAGE_FPS

    def _frames(self) -> Iterator[Frame]:
        for i in range(0, len(self.files), self.every_n):
            f = self.files[i]
            t = time.perf_counter()
            try:
                rgb = read_image(f)
            except ImageReadError as e:
                if self.on_error == "raise":
                    raise
                yield Frame(i, i / DEFAULT_IMAGE_FPS, None, str(f), str(e), (time.perf_counter() - t) * 1e3)
                continue
            yield Frame(i, i / DEFAULT_IMAGE_FPS, rgb, str(f), None, (time.perf_counter() - t) * 1e3)


class VideoSource(FrameSource):
    """A video file or a stream through ``cv2.VideoCapture``. Skipped frames are only grabbed (not
    decoded). Time: ``index / fps`` for files with a frame rate, else seconds since opening."""

    def __init__(self, spec: str | int | Path, every_n: int = 1, max_frames: int | None = None) -> None:
        super().__init__(str(spec), every_n, max_frames)
        cv2 = _cv2()
        self.kind = "video" if Path(str(spec)).is_file() else ("stream" if is_stream(spec) else "video")
        if self.kind == "video":
            p = Path(spec)
            if not p.is_file():
                raise SourceError(f"{p}: video file not found")
            target: Any = str(p)
        else:
            target = int(spec) if isinstance(spec, int) or str(spec).isdigit() else str(spec)
        self.cap = cv2.VideoCapture(target)
        ok = self.cap.isOpened()
        if ok and self.kind == "video":
            # some corrupt files "open"; they must at least report a frame size
            ok = self.cap.get(cv2.CAP_PROP_FRAME_WIDTH) > 0 and self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) > 0
        if not ok:
            self.cap.release()
            what = "video file" if self.kind == "video" else ("camera" if isinstance(target, int) else "stream")
            raise SourceError(f"{self.name}: cannot open {what} (not a video OpenCV can decode, or unreachable)")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and self.kind == "video" else None
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def _frames(self) -> Iterator[Frame]:
        cv2 = _cv2()
        t_open = time.monotonic()
        i = 0
        t = time.perf_counter()  # read_ms of a frame includes grabbing the skipped ones before it
        while True:
            if i % self.every_n:
                if not self.cap.grab():
                    return
                i += 1
                continue
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            read_ms = (time.perf_counter() - t) * 1e3
            ts = i / self.fps if (self.fps and self.kind == "video") else time.monotonic() - t_open
            yield Frame(i, round(ts, 4), rgb, None, None, read_ms)
            i += 1
            t = time.perf_counter()

    def close(self) -> None:
        self.cap.release()


def open_source(spec: str | int | Path, every_n: int = 1, max_frames: int | None = None,
                on_error: str = "raise") -> FrameSource:
    """A frame source for an image file, a folder of images, a video file or a stream URL / camera
    index; iterate it for ``(frame_index, timestamp_s, rgb)``. Raises :class:`SourceError` naming
    ``spec`` if it does not exist or cannot be opened."""
    kind = source_kind(spec)
    if kind in ("image", "folder"):
        return ImageSource(spec, every_n, max_frames, on_error)
    return VideoSource(spec, every_n, max_frames)


# -- drawing -----------------------------------------------------------------------------------------

PALETTE = [(255, 64, 64), (64, 160, 255), (64, 220, 64), (255, 200, 0), (200, 64, 255), (0, 220, 220)]


def _colour(label: str, labels: list[str] | None) -> tuple[int, int, int]:
    if labels and label in labels:
        return PALETTE[labels.index(label) % len(PALETTE)]
    return PALETTE[sum(map(ord, str(label))) % len(PALETTE)]


def _text(img: np.ndarray, text: str, x: int, y: int, colour, scale: float = 0.45) -> None:
    cv2 = _cv2()
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = int(min(max(0, x), max(0, img.shape[1] - tw - 2)))
    y = int(min(max(th + 2, y), img.shape[0] - base - 1))
    cv2.rectangle(img, (x, y - th - 2), (x + tw + 2, y + base), colour, -1)
    dark = sum(colour) > 380
    cv2.putText(img, text, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0) if dark else (255, 255, 255),
                1, cv2.LINE_AA)


def annotate(rgb: np.ndarray, detections: list[dict[str, Any]], zones=None, counts: dict[str, Any] | None = None,
             labels: list[str] | None = None) -> np.ndarray:
    """A copy of ``rgb`` with boxes + ``label score`` (+ ``#track``), zone polygons with their
    occupancy and counting lines with their ``in``/``out`` counts (``zones``: a
    :class:`vision.runtime.zones.ZoneConfig`, ``counts``: what its counter returned for this frame)."""
    cv2 = _cv2()
    img = np.ascontiguousarray(rgb.copy())
    counts = counts or {}
    if zones is not None:
        for z in zones.zones:
            pts = np.round(z.polygon).astype(np.int32).reshape(-1, 1, 2)
            overlay = img.copy()
            cv2.fillPoly(overlay, [pts], (0, 200, 255))
            cv2.addWeighted(overlay, 0.15, img, 0.85, 0, dst=img)
            cv2.polylines(img, [pts], True, (0, 200, 255), 2, cv2.LINE_AA)
            n = counts.get("zones", {}).get(z.name)
            x, y = pts[:, 0, 0].min(), pts[:, 0, 1].min()
            _text(img, f"{z.name}: {n}" if n is not None else z.name, x + 2, y + 16, (0, 200, 255))
        for ln in zones.lines:
            p1 = tuple(int(round(v)) for v in ln.p1)
            p2 = tuple(int(round(v)) for v in ln.p2)
            cv2.line(img, p1, p2, (255, 0, 255), 2, cv2.LINE_AA)
            c = counts.get("lines", {}).get(ln.name)
            txt = f"{ln.name} in {c['in']} out {c['out']}" if c else ln.name
            _text(img, txt, min(p1[0], p2[0]) + 2, min(p1[1], p2[1]) - 4, (255, 0, 255))
    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d["box"])
        col = _colour(d["label"], labels)
        cv2.rectangle(img, (x1, y1), (x2, y2), col, 2)
        tag = f"{d['label']} {d['score']:.2f}" + (f" #{d['track_id']}" if "track_id" in d else "")
        _text(img, tag, x1, y1 - 2, col)
    return img


class VideoWriter:
    """mp4 (``mp4v``) writer of RGB frames; the file appears under ``path`` only on :meth:`close`
    (written to a hidden temporary name beside it, then ``os.replace``). Frames of another size
    than the first are resized to it. Used as a context manager, an exception discards the video."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int] | None = None, codec: str = "mp4v") -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_IMAGE_FPS
        self.size = size  # (width, height), from the first frame when None
        self.codec = codec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix or '.mp4'}")
        self._w = None
        self.frames = 0

    def _open(self, size: tuple[int, int]) -> None:
        cv2 = _cv2()
        self.size = size
        self._w = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.codec), self.fps, size)
        if not self._w.isOpened():
            raise SourceError(f"{self.path}: cannot write a {self.codec} video here")

    def write(self, rgb: np.ndarray) -> None:
        cv2 = _cv2()
        h, w = rgb.shape[:2]
        if self._w is None:
            self._open(self.size or (w, h))
        if (w, h) != tuple(self.size):
            rgb = cv2.resize(rgb, tuple(self.size), interpolation=cv2.INTER_AREA)
        self._w.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; returns its path (None if no frame was written)."""
        if self._w is None:
            return None
        self._w.release()
        self._w = None
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        if self._w is not None:
            self._w.release()
            self._w = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def save_frame(path: str | Path, rgb: np.ndarray, quality: int = 90) -> Path:
    """Write an RGB frame (JPEG/PNG by extension) atomically: temporary name, then ``os.replace``."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
           ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    try:
        Image.fromarray(rgb).save(tmp, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
