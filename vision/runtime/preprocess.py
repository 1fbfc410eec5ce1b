"""The one preprocessing spec shared by training, export and the runtime (numpy + Pillow only).

Training evaluates through exactly this code, the export writes the spec into ``bundle.json``,
and the runtime reads it back from there, so the three can never drift apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
RESIZE_MODES = ("stretch", "letterbox", "center_crop")
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
                  "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}


class ImageReadError(ValueError):
    """An image file cannot be read: missing, corrupt or truncated (the message names the file)."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input tensor (NCHW float32)."""

    size: tuple[int, int] = (128, 128)  # (height, width) of the network input
    resize: str = "stretch"  # stretch | letterbox | center_crop
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # on 0..1 pixel values
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"  # RGB | BGR
    pad_value: int = 114  # letterbox fill
    layout: str = "NCHW"
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"preprocess.size must be two integers >= 8 (height, width), got {self.size!r}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"preprocess.resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocess.interpolation must be one of {tuple(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"preprocess.channel_order must be RGB or BGR, got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("preprocess.mean and preprocess.std need 3 values each, std > 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        return cls(**dict(d))


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array, fully (so truncation is detected here)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({e})") from e


def resize_image(rgb: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, dict[str, float]]:
    """Resize an HxWx3 uint8 image to the spec's size; returns the image and the geometry applied."""
    h, w = rgb.shape[:2]
    th, tw = spec.size
    interp = INTERPOLATIONS[spec.interpolation]
    im = Image.fromarray(rgb)
    if spec.resize == "stretch":
        out = np.asarray(im.resize((tw, th), interp))
        return out, {"scale_x": tw / w, "scale_y": th / h, "pad_x": 0.0, "pad_y": 0.0}
    if spec.resize == "letterbox":
        s = min(tw / w, th / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = np.full((th, tw, 3), spec.pad_value, dtype=np.uint8)
        px, py = (tw - nw) // 2, (th - nh) // 2
        canvas[py:py + nh, px:px + nw] = np.asarray(im.resize((nw, nh), interp))
        return canvas, {"scale_x": s, "scale_y": s, "pad_x": float(px), "pad_y": float(py)}
    # center_crop: scale the short side to fit, crop the centre
    s = max(tw / w, th / h)
    nw, nh = max(tw, round(w * s)), max(th, round(h * s))
    big = np.asarray(im.resize((nw, nh), interp))
    x0, y0 = (nw - tw) // 2, (nh - th) // 2
    return big[y0:y0 + th, x0:x0 + tw], {"scale_x": s, "scale_y": s, "pad_x": float(-x0), "pad_y": float(-y0)}


def normalize(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWx3 uint8 (already at the input size) -> 3xHxW float32, normalized, in the spec's channel order."""
    x = rgb.astype(np.float32) * (1.0 / 255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWx3 uint8 RGB of any size -> 3xHxW float32 network input."""
    resized, _ = resize_image(rgb, spec)
    return normalize(resized, spec)
