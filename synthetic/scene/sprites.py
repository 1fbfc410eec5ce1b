"""Real-appearance people for the scene engine: person crops from a user folder, cut out and composited.

Procedural people give exact labels and unlimited poses, but their flat-shaded look is far from real
footage. A :class:`SpriteBank` turns a folder of real person crops (the MARS or Market-1501 layouts, or
any folder of upright person crops) into cut-out sprites: a foreground matte per crop from GrabCut
seeded with a body-shaped prior, united with that prior so heads, arms and legs are not lost where they
resemble the background. The renderer then draws a sprite where a person stands, at the projected
height for its distance, lit by the scene, occluded and occluding like any other object, with the
same walking trajectory, shadows and labels (the box is the matte's extent). The frame-level
randomization (night/IR, rain, fog, blur, noise, compression, camera faults) applies on top.

A MARS tracklet (``PPPPCcTtttt Ffff.jpg``: identity, camera, tracklet, frame) becomes one walking
person: its crops are played in order as the agent walks. Any other crop is a one-image track.

Mattes are deterministic (OpenCV's RNG is reseeded per crop) and cached on disk by the folder's
fingerprint (file names and sizes), so a bank is cut out once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = ["Sprite", "SpriteBank", "generated_licence", "load_sprite_bank", "sprite_tracks"]

_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}
_MARS = re.compile(r"^(\d{4}C\d+T\d{4})F(\d+)$", re.IGNORECASE)
_MATTE_VERSION = 1
_BANKS: dict[tuple, "SpriteBank"] = {}


@dataclass
class Sprite:
    rgb: np.ndarray        # h x w x 3 uint8 RGB, cropped to the matte's extent
    alpha: np.ndarray      # h x w uint8 matte (255 = person)
    file: str              # path relative to the bank root


def _body_prior(h: int, w: int) -> np.ndarray:
    """GrabCut seed mask of an upright person filling the crop (as detector crops do)."""
    m = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    cv2.ellipse(m, (w // 2, int(h * 0.1)), (max(1, int(w * 0.16)), max(1, int(h * 0.08))), 0, 0, 360,
                cv2.GC_PR_FGD, -1)
    cv2.rectangle(m, (int(w * 0.25), int(h * 0.17)), (int(w * 0.75), int(h * 0.55)), cv2.GC_PR_FGD, -1)
    cv2.rectangle(m, (int(w * 0.3), int(h * 0.55)), (int(w * 0.7), int(h * 0.97)), cv2.GC_PR_FGD, -1)
    cv2.rectangle(m, (int(w * 0.42), int(h * 0.2)), (int(w * 0.58), int(h * 0.5)), cv2.GC_FGD, -1)
    b = max(1, int(w * 0.04))
    m[:, :b] = cv2.GC_BGD
    m[:, w - b:] = cv2.GC_BGD
    m[:int(h * 0.05), :int(w * 0.25)] = cv2.GC_BGD
    m[:int(h * 0.05), int(w * 0.75):] = cv2.GC_BGD
    return m


def cut_out(bgr: np.ndarray) -> np.ndarray:
    """The person matte (uint8, 255 inside) of one upright person crop."""
    H, W = bgr.shape[:2]
    small = cv2.resize(bgr, (max(8, W // 2), max(16, H // 2)), interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    seed = _body_prior(h, w)
    m = seed.copy()
    cv2.setRNGSeed(12345)  # GrabCut's GMM initialisation draws from OpenCV's global RNG
    try:
        cv2.grabCut(small, m, None, np.zeros((1, 65)), np.zeros((1, 65)), 3, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        m = seed  # a flat crop GrabCut cannot model: the body prior alone
    fg = ((m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    prior = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg | prior)
    if n > 1:  # one connected person: the component holding the body prior's core
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fg = (lab == keep).astype(np.uint8)
    a = cv2.resize(fg.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    a = cv2.GaussianBlur(a, (5, 5), 0)
    return np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)


def sprite_tracks(root: Path, stride: int, exclude: Sequence[str] = ()) -> tuple[dict[str, list[Path]], str]:
    """The crops under ``root`` used with ``stride`` (every n-th crop of a track), grouped into tracks (a
    MARS tracklet, or one file) in name order, and their fingerprint (names and sizes: a changed folder
    gives a new fingerprint). Crops
    whose file name starts with one of ``exclude`` (identity prefixes, e.g. a benchmark's test persons)
    are left out."""
    exclude = tuple(str(e) for e in exclude)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _EXTS and p.is_file()
                   and not (exclude and p.name.startswith(exclude)))
    if not files:
        raise ValueError(f"person_sprites: {root} holds no images ({', '.join(sorted(_EXTS))})"
                         + (f" once {list(exclude)} are excluded" if exclude else ""))
    groups: dict[str, list[Path]] = {}
    for p in files:
        m = _MARS.match(p.stem)
        groups.setdefault(str(p.parent / m.group(1)) if m else str(p.with_suffix("")), []).append(p)
    groups = {key: groups[key][::stride] for key in sorted(groups)}
    fingerprint = hashlib.sha256(json.dumps(
        [_MATTE_VERSION, stride, sorted(exclude),
         [(str(p.relative_to(root)), p.stat().st_size) for track in groups.values() for p in track]]
    ).encode()).hexdigest()[:16]
    return groups, fingerprint


class SpriteBank:
    """Cut-out person sprites from ``root`` (searched recursively), grouped into walking tracks."""

    def __init__(self, root: str | os.PathLike, stride: int = 2, cache_dir: str | os.PathLike | None = None,
                 licence: str | None = None, exclude: Sequence[str] = ()):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"person_sprites: {self.root} is not a folder of person crops")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"person_sprites: stride must be an int >= 1, got {stride!r}")
        groups, self.fingerprint = sprite_tracks(self.root, stride, exclude)
        self.exclude = sorted(str(e) for e in exclude)
        self.licence = licence
        self.stride = stride
        cache = Path(cache_dir).expanduser() / f"sprites-{self.fingerprint}.npz" if cache_dir else None
        cached = None
        if cache is not None and cache.is_file():
            with np.load(cache) as z:
                cached = {n: z[f"m{i}"] for i, n in enumerate(json.loads(str(z["names"])))}
        mattes: dict[str, np.ndarray] = {}
        self.sprites: list[Sprite] = []
        self.tracks: list[list[int]] = []
        for files in groups.values():
            track = []
            for p in files:
                rgb = self._read(p)
                rel = str(p.relative_to(self.root))
                a = mattes[rel] = cached[rel] if cached is not None else cut_out(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                ys, xs = np.nonzero(a >= 128)
                if len(ys) == 0:
                    raise ValueError(f"person_sprites: {p}: no person could be cut out of this crop")
                y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                track.append(len(self.sprites))
                self.sprites.append(Sprite(np.ascontiguousarray(rgb[y0:y1, x0:x1]),
                                           np.ascontiguousarray(a[y0:y1, x0:x1]), rel))
            self.tracks.append(track)
        if cache is not None and cached is None:  # cut out once per folder fingerprint
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}.npz")
            names = list(mattes)
            np.savez_compressed(tmp, names=json.dumps(names), **{f"m{i}": mattes[n] for i, n in enumerate(names)})
            os.replace(tmp, cache)

    @staticmethod
    def _read(p: Path) -> np.ndarray:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"person_sprites: {p}: not a readable image (corrupt or not an image)")
        if bgr.shape[0] < 16 or bgr.shape[1] < 8:
            raise ValueError(f"person_sprites: {p}: crop {bgr.shape[1]}x{bgr.shape[0]} is too small for a sprite "
                             f"(at least 8x16 pixels)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def __len__(self) -> int:
        return len(self.sprites)

    def describe(self) -> dict:
        return {"root": str(self.root), "fingerprint": self.fingerprint, "sprites": len(self.sprites),
                "tracks": len(self.tracks), "stride": self.stride, "licence": self.licence,
                "exclude": self.exclude}

    def frame(self, track: int, walked_m: float, step_m: float = 0.3) -> Sprite:
        """The sprite of ``track`` after walking ``walked_m`` metres (one crop per ``step_m``)."""
        t = self.tracks[track]
        return self.sprites[t[int(max(walked_m, 0.0) / step_m) % len(t)]]


def generated_licence(person_sprites: dict | None) -> str:
    """The licence of generated data: ``generated``, or with real-appearance people also their crops'."""
    if not person_sprites:
        return "generated"
    return f"generated; person appearance: {person_sprites.get('licence') or 'licence of ' + str(person_sprites['root'])}"


def load_sprite_bank(root, stride: int = 2, cache_dir=None, licence: str | None = None,
                     exclude: Sequence[str] = ()) -> SpriteBank:
    """A :class:`SpriteBank`, kept in memory per folder and options (the scenes of a run share one bank)."""
    key = (str(Path(root).expanduser().resolve()), int(stride) if isinstance(stride, int) else stride,
           str(cache_dir), licence, tuple(sorted(str(e) for e in exclude)))
    bank = _BANKS.get(key)
    if bank is None:
        bank = _BANKS[key] = SpriteBank(root, stride, cache_dir, licence, exclude)
    return bank


def recolour(rgb: np.ndarray, hue_shift: float) -> np.ndarray:
    """Clothing colours turned by ``hue_shift`` degrees: coloured pixels only, in proportion to their
    saturation (greys, blacks and whites stay; skin, weakly saturated, moves little)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)
    sat = hsv[..., 1].astype(np.float32) / 255.0
    weight = np.clip((sat - 0.25) / 0.35, 0.0, 1.0)
    shift = (weight * (hue_shift % 360.0) * 256.0 / 360.0 + 0.5).astype(np.int32)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def composite(img: np.ndarray, mask: np.ndarray, ident: int, sprite: Sprite, x0: int, y0: int, w: int, h: int,
              light: np.ndarray, flip: bool, hue_shift: float = 0.0) -> None:
    """Draw ``sprite`` scaled to ``w`` x ``h`` with its top-left at (x0, y0), lit by ``light`` (RGB gains)
    and, with ``hue_shift``, recoloured (:func:`recolour`); pixels where the matte is >= 50% get
    ``ident`` in ``mask``."""
    H, W = mask.shape
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if ax1 <= ax0 or ay1 <= ay0:
        return
    interp = cv2.INTER_AREA if h < sprite.rgb.shape[0] else cv2.INTER_LINEAR
    rgb = cv2.resize(sprite.rgb, (w, h), interpolation=interp)
    a = cv2.resize(sprite.alpha, (w, h), interpolation=interp)
    if flip:
        rgb, a = rgb[:, ::-1], a[:, ::-1]
    if hue_shift:
        rgb = recolour(np.ascontiguousarray(rgb), hue_shift)
    sx, sy = ax0 - x0, ay0 - y0
    rgb = rgb[sy:sy + ay1 - ay0, sx:sx + ax1 - ax0].astype(np.float32) * light[None, None, :].astype(np.float32)
    a = a[sy:sy + ay1 - ay0, sx:sx + ax1 - ax0]
    af = a.astype(np.float32)[..., None] / 255.0
    dst = img[ay0:ay1, ax0:ax1]
    dst[...] = np.clip(dst.astype(np.float32) * (1.0 - af) + np.minimum(rgb, 255.0) * af + 0.5, 0, 255).astype(np.uint8)
    mask[ay0:ay1, ax0:ax1][a >= 128] = ident
