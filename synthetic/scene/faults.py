"""Camera faults: covered, sprayed/dirty lens, defocused, turned away, too dark.

One implementation shared by the scene engine (the ``camera_fault``
randomization parameter, see :mod:`synthetic.scene.randomize`) and the
camera-health frame generator (:mod:`synthetic.camera_health`, which imports
everything here). Each fault draws its values through a :class:`ParamRecorder`
so every value used is recorded (rounded to exactly the value used).

Image functions work on float32 HxWx3 radiance in [0, 255] (the camera-health
pipeline); :class:`CameraFault` wraps them for the engine's uint8 effect chain
and says what a fault does to the labels (:data:`FAULT_LABEL_RULES`):

``covered``      a near-lens object; pixels where its opacity is >=
                 :data:`HIDDEN_ALPHA` hide what is behind them (``occluded``:
                 per-object visible pixels, boxes and fractions exclude them).
``dirty_lens``   smudges/droplets/spray blurring and veiling parts of the view;
                 their opacity stays below :data:`HIDDEN_ALPHA`, the objects
                 stay visible (``kept``).
``defocused``    strong Gaussian or disc blur; geometry unchanged (``kept``).
``turned_away``  the camera looks at the sky, a wall or a ceiling (``dropped``:
                 no object is in view).
``too_dark``     exposure collapsed to a few percent, gain-amplified noise
                 (``dropped``: nothing is discernible, no object is labelled).
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

import cv2
import numpy as np

from synthetic.texture import periodic_distance, stripe_coverage

__all__ = [
    "CAMERA_FAULTS", "FAULT_LABEL_RULES", "HIDDEN_ALPHA", "ParamRecorder", "CameraFault", "fault_light",
    "render_away", "cover_layer", "composite_cover", "apply_cover", "dirt_layer", "composite_dirt", "apply_dirty_lens",
    "sample_too_dark", "apply_too_dark", "apply_defocus_fault", "blur", "disc_blur",
]

#: fault names, in the order of ``randomization.camera_faults``
CAMERA_FAULTS = ("covered", "dirty_lens", "defocused", "turned_away", "too_dark")
#: what a fault does to the frame's labels: kept (unchanged), occluded (per pixel), dropped (no objects)
FAULT_LABEL_RULES = {"covered": "occluded", "dirty_lens": "kept", "defocused": "kept", "turned_away": "dropped",
                     "too_dark": "dropped"}
#: a lens-level layer at least this opaque hides the scene behind it
HIDDEN_ALPHA = 0.5

_AA = cv2.LINE_AA
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = float(1 << _SHIFT)

# 256-entry inverse normal CDF: maps uniform random bytes to (quantised)
# standard-normal noise ~10x faster than Generator.standard_normal.
_NOISE_LUT = np.array(
    [NormalDist().inv_cdf((k + 0.5) / 256.0) for k in range(256)], np.float32
).reshape(1, 256)

# palettes (RGB)
_SKIN = ((235, 200, 170), (215, 170, 135), (190, 140, 100), (150, 100, 70), (100, 65, 45), (70, 48, 35))
_WALLS = (
    (200, 198, 190), (170, 168, 162), (215, 200, 170), (160, 90, 70), (120, 120, 118),
    (225, 225, 220), (180, 195, 200), (150, 165, 140),
)
_COVER_COLOURS = (
    (30, 30, 35), (60, 60, 70), (150, 30, 30), (40, 60, 120), (200, 200, 195),
    (90, 110, 70), (170, 140, 100), (210, 180, 60), (120, 80, 60), (20, 20, 20),
)


# --------------------------------------------------------------------------
# parameter recording
class _Params:
    """Draws random values from a Generator and records the named ones.

    Scalar values are taken from a pre-drawn buffer (much faster than one
    Generator call per value) and rounded, so the recorded value is exactly
    the value used for drawing. Values drawn without a key are either stored
    by the caller (object lists) or, inside ``capture()``, as raw uniforms.
    Pixel-level noise fields (textures, sensor noise) come from ``rng``.
    """

    __slots__ = ("rng", "d", "_buf", "_cap")

    def __init__(self, rng: np.random.Generator, d: dict):
        self.rng = rng
        self.d = d
        self._buf: list[float] = []
        self._cap: list | None = None

    def u(self) -> float:
        if not self._buf:
            self._buf = self.rng.random(128).tolist()
            self._buf.reverse()
        v = self._buf.pop()
        if self._cap is not None:
            self._cap.append(round(v, 6))
        return v

    def capture(self, key):
        """Record every raw uniform drawn inside the block as ``d[key]``."""
        return _Capture(self, key)

    def uniform(self, key, lo, hi, nd=4):
        v = round(lo + (hi - lo) * self.u(), nd)
        if key:
            self.d[key] = v
        return v

    def randint(self, key, lo, hi):
        """Integer in [lo, hi] (inclusive)."""
        v = lo + min(int(self.u() * (hi - lo + 1)), hi - lo)
        if key:
            self.d[key] = v
        return v

    def choice(self, key, options, weights=None):
        if weights is None:
            i = min(int(self.u() * len(options)), len(options) - 1)
        else:
            r = self.u() * sum(weights)
            i = len(options) - 1
            acc = 0.0
            for j, w in enumerate(weights):
                acc += w
                if r < acc:
                    i = j
                    break
        v = options[i]
        if key:
            self.d[key] = list(v) if isinstance(v, tuple) else v
        return v

    def flag(self, key, prob):
        v = int(self.u() < prob)
        if key:
            self.d[key] = v
        return v

    def color(self, key, base, jitter=0.0, lum=0.0):
        common = (2.0 * self.u() - 1.0) * lum
        v = [int(min(255, max(0, round(c + common + (2.0 * self.u() - 1.0) * jitter)))) for c in base]
        if key:
            self.d[key] = v
        return v


class _Capture:
    def __init__(self, p: _Params, key: str):
        self.p, self.key = p, key

    def __enter__(self):
        self.p._cap = []
        return self

    def __exit__(self, *exc):
        self.p.d[self.key] = self.p._cap
        self.p._cap = None
        return False


# --------------------------------------------------------------------------
# small helpers
def _pts(x, y) -> np.ndarray:
    """Fixed-point (sub-pixel) int32 point array for OpenCV drawing."""
    if isinstance(x, np.ndarray):
        return np.rint(np.stack([x, y], -1) * _ONE).astype(np.int32)
    return np.array([(round(a * _ONE), round(b * _ONE)) for a, b in zip(x, y)], np.int32)


def _poly(img, x, y, col):
    cv2.fillConvexPoly(img, _pts(x, y), col, _AA, _SHIFT)


def _circle(img, x, y, r, col):
    cv2.circle(img, (int(round(x * _ONE)), int(round(y * _ONE))), max(int(round(r * _ONE)), 8), col, -1, _AA, _SHIFT)


def _ellipse(img, x, y, rx, ry, col, a0=0, a1=360, angle=0.0):
    cv2.ellipse(
        img,
        (int(round(x * _ONE)), int(round(y * _ONE))),
        (max(int(round(rx * _ONE)), 8), max(int(round(ry * _ONE)), 8)),
        angle, a0, a1, col, -1, _AA, _SHIFT,
    )


def _line(img, x0, y0, x1, y1, col, width):
    """Anti-aliased line of (possibly sub-pixel) width as a filled quad."""
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    w = max(width, 0.7) * 0.5
    nx, ny = -dy / n * w, dx / n * w
    _poly(img, (x0 + nx, x1 + nx, x1 - nx, x0 - nx), (y0 + ny, y1 + ny, y1 - ny, y0 - ny), col)


def _shade(col, k):
    return (min(255.0, float(col[0]) * k), min(255.0, float(col[1]) * k), min(255.0, float(col[2]) * k))


def _gauss_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Approximately standard-normal float32 noise (fast, deterministic)."""
    n = int(np.prod(shape))
    b = np.frombuffer(rng.bytes(n), np.uint8).reshape(shape)
    return cv2.LUT(b, _NOISE_LUT)


def _smooth_noise(rng: np.random.Generator, gw: int, gh: int, w: int, h: int) -> np.ndarray:
    """Low-frequency noise field of size (h, w), roughly unit variance."""
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    if w * h > 4096 and w >= 4 * gw and h >= 4 * gh:
        # cubic to an intermediate size, then (cheaper) linear
        g = cv2.resize(g, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC)
        return cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


_cov = stripe_coverage
_pdist = periodic_distance


@lru_cache(maxsize=16)
def _grids(W: int, H: int):
    """Cached read-only coordinate grids for a frame size."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    nx = (xs + 0.5) / W * 2.0 - 1.0
    ny = (ys + 0.5) / H * 2.0 - 1.0
    r2 = (nx * nx * (W / max(W, H)) ** 2 + ny * ny * (H / max(W, H)) ** 2) / (
        (W / max(W, H)) ** 2 + (H / max(W, H)) ** 2
    )
    lw, lh = max(8, W // 4), max(6, H // 4)
    ly, lx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    lnx = (lx + 0.5) / lw * 2.0 - 1.0
    lny = ((ly + 0.5) / lh * 2.0 - 1.0) * (H / W)
    out = (nx, ny, r2.astype(np.float32), lnx, lny, xs, ys)
    for a in out:
        a.setflags(write=False)
    return out


# --------------------------------------------------------------------------
# "turned away" view: sky, wall or ceiling
def render_away(p: _Params, light: dict, W: int, H: int, view_weights=(0.35, 0.4, 0.25)) -> np.ndarray:
    """The camera turned away from the scene: sky, a wall or a ceiling (``view_weights`` of the three);
    float32 HxWx3 in [0, 255]. Records ``away_*`` parameters in ``p``."""
    rng = p.rng
    u = min(W, H) / 120.0
    nx, ny, r2, _, _, xs, ys = _grids(W, H)
    kind = p.choice("away_view", ("sky", "wall", "ceiling"), view_weights)
    ang = math.radians(p.uniform("away_gradient_deg", 0.0, 360.0))
    grad = (nx * math.cos(ang) + ny * math.sin(ang) * (H / W))  # -1..1
    amb = light["amb"]
    night = light["tod"] == "night"
    structure = "none"
    # per-channel planes (fast) from a base colour and a single-channel shade
    if kind == "sky":
        top = _shade(light["top"], 0.9)
        hor = light["hor"]
        t = np.clip(0.5 + 0.5 * grad * p.uniform("away_gradient_strength", 0.3, 1.0), 0, 1)
        planes = [top[c] + (hor[c] - top[c]) * t for c in range(3)]
        if not night and p.flag("away_clouds", 0.55):
            cl = _smooth_noise(rng, 5, 4, W, H)
            thr = p.uniform("away_cloud_threshold", -0.8, 0.8)
            cm = np.clip((cl - thr) * p.uniform("away_cloud_contrast", 0.15, 0.6), 0.0, 0.85)
            ck = 0.8 if light["tod"] == "dusk" else 1.0
            for c, cc in enumerate((230 * ck, 230 * ck, 232 * ck)):
                planes[c] += (cc - planes[c]) * cm
        structure = p.choice("away_structure", ("none", "roof_edge", "wires", "lamp_head", "branch"),
                             (0.5, 0.15, 0.15, 0.1, 0.1))
    elif kind == "wall":
        wc = _shade(p.choice("away_wall_rgb", _WALLS), amb * (0.7 if night else 1.0))
        strength = p.uniform("away_gradient_strength", 0.05, 0.35)
        S = 1.0 + strength * grad
        pattern = p.choice("away_wall_pattern", ("plain", "brick", "panels"), (0.45, 0.3, 0.25))
        if pattern == "brick":
            bh = p.uniform("away_brick_px", 4.0, 9.0) * u
            row = np.floor(ys / bh)
            m1 = _cov(_pdist(ys, bh), 0.9 * u, 1.0)
            m2 = _cov(_pdist(xs + (row % 2) * bh * 1.1, bh * 2.2), 0.9 * u, 1.0)
            S *= 1.0 - 0.25 * np.maximum(m1, m2) + 0.05 * _smooth_noise(rng, 12, 9, W, H)
        elif pattern == "panels":
            ps = p.uniform("away_panel_px", 20.0, 60.0) * u
            mort = np.maximum(_cov(_pdist(ys, ps), 1.0 * u, 1.0), _cov(_pdist(xs, ps * 1.5), 1.0 * u, 1.0))
            S *= 1.0 - 0.2 * mort
        S *= 1.0 + p.uniform("away_stain_amp", 0.02, 0.1) * _smooth_noise(rng, 6, 5, W, H)
        planes = [S * wc[c] for c in range(3)]
        structure = p.choice("away_structure", ("none", "edge", "lamp", "pipe", "sign", "window"),
                             (0.35, 0.2, 0.15, 0.1, 0.1, 0.1))
    else:
        cc = _shade(p.choice("away_ceiling_rgb", ((215, 215, 210), (200, 195, 185), (180, 182, 185))),
                    0.8 + 0.2 * amb)
        lx, ly = p.uniform("away_light_x", -1.2, 1.2), p.uniform("away_light_y", -1.2, 1.2)
        fall = p.uniform("away_light_falloff", 0.3, 1.2)
        d2 = (nx - lx) ** 2 + ((ny - ly) * (H / W)) ** 2
        S = 0.45 + 0.75 / (1.0 + fall * 3.0 * d2)
        if p.flag("away_ceiling_tiles", 0.55):
            # perspective grid of ceiling tiles (plane seen at an angle)
            ps = p.uniform("away_tile_px", 18.0, 40.0) * u
            k = p.uniform("away_tile_perspective", 0.0, 0.6) / (H * 0.5)
            den = 1.0 + k * (ys - H * 0.5)
            fp = 1.0 / den
            gx, gy = (xs - W * 0.5) * fp, (ys - H * 0.5) * fp
            S *= 1.0 - 0.22 * np.maximum(_cov(_pdist(gx, ps), 1.0 * u, fp), _cov(_pdist(gy, ps), 1.0 * u, fp))
        planes = [S * cc[c] for c in range(3)]
        structure = p.choice("away_structure", ("none", "lamp", "beam", "vent"), (0.3, 0.4, 0.15, 0.15))
    img = cv2.merge([np.asarray(a, np.float32) for a in planes])

    # a little structure, drawn on an 8-bit layer with anti-aliasing
    if structure != "none":
        lay = np.clip(img, 0, 255).astype(np.uint8)
        cx, cy = W * p.uniform("away_structure_x", 0.0, 1.0), H * p.uniform("away_structure_y", 0.0, 1.0)
        sz = p.uniform("away_structure_size", 0.08, 0.35) * min(W, H)
        base = img.mean(axis=(0, 1))
        glow = None
        with p.capture("away_structure_draws"):
            if structure == "roof_edge":
                e = p.randint(None, 0, 3)
                d = sz * 0.8
                col = _shade((60, 60, 65), 0.5 + 0.5 * amb)
                if e == 0:
                    _poly(lay, (-5, W + 5, W + 5, -5), (-5, -5, d, d * p.uniform(None, 0.2, 1.8)), col)
                elif e == 1:
                    _poly(lay, (-5, W + 5, W + 5, -5), (H - d, H - d * p.uniform(None, 0.2, 1.8), H + 5, H + 5), col)
                elif e == 2:
                    _poly(lay, (-5, d, d * p.uniform(None, 0.2, 1.8), -5), (-5, -5, H + 5, H + 5), col)
                else:
                    _poly(lay, (W - d, W + 5, W + 5, W - d * 0.5), (-5, -5, H + 5, H + 5), col)
            elif structure == "wires":
                for _ in range(p.randint(None, 1, 3)):
                    ya, yb = H * p.u(), H * p.u()
                    _line(lay, -2, ya, W + 2, yb, _shade((30, 30, 32), 0.6 + 0.4 * amb), 0.8 * u)
            elif structure in ("lamp_head", "lamp"):
                lamp = light["lamp"] if night or kind == "ceiling" else (235, 235, 230)
                if structure == "lamp_head":
                    _line(lay, cx, cy, cx + sz, cy + sz * 0.2, (55, 55, 58), sz * 0.12)
                if kind == "ceiling":
                    _poly(lay, (cx - sz, cx + sz, cx + sz, cx - sz), (cy - sz * 0.25, cy - sz * 0.25, cy + sz * 0.25,
                                                                       cy + sz * 0.25), (80, 80, 80))
                    _poly(lay, (cx - sz * 0.9, cx + sz * 0.9, cx + sz * 0.9, cx - sz * 0.9),
                          (cy - sz * 0.15, cy - sz * 0.15, cy + sz * 0.15, cy + sz * 0.15), lamp)
                else:
                    _ellipse(lay, cx, cy, sz * 0.35, sz * 0.25, (90, 90, 92))
                    _ellipse(lay, cx, cy + sz * 0.05, sz * 0.28, sz * 0.16, lamp)
                glow = (cx, cy, sz * 0.6)
            elif structure == "branch":
                tc = _shade((40, 60, 35), 0.5 + 0.5 * amb)
                for _ in range(p.randint(None, 3, 7)):
                    _circle(lay, cx + (p.u() - 0.5) * sz * 1.5, cy + (p.u() - 0.5) * sz, sz * (0.2 + 0.3 * p.u()), tc)
            elif structure == "edge":
                x1 = cx + (p.u() - 0.5) * W * 0.3
                k = p.uniform(None, 0.55, 0.85)
                _poly(lay, (cx, W + 5, W + 5, x1), (-5, -5, H + 5, H + 5), _shade(base, k))
            elif structure == "pipe":
                w = sz * 0.3
                col = _shade((150, 150, 150), amb)
                if p.u() < 0.5:
                    _line(lay, cx, -2, cx, H + 2, col, w)
                    _line(lay, cx - w * 0.2, -2, cx - w * 0.2, H + 2, _shade(col, 1.3), w * 0.2)
                else:
                    _line(lay, -2, cy, W + 2, cy, col, w)
                    _line(lay, -2, cy - w * 0.2, W + 2, cy - w * 0.2, _shade(col, 1.3), w * 0.2)
            elif structure in ("sign", "vent"):
                col = p.choice(None, ((30, 90, 40), (200, 200, 200), (30, 60, 140), (180, 40, 40), (120, 120, 120)))
                _poly(lay, (cx - sz * 0.5, cx + sz * 0.5, cx + sz * 0.5, cx - sz * 0.5),
                      (cy - sz * 0.3, cy - sz * 0.3, cy + sz * 0.3, cy + sz * 0.3), _shade(col, amb))
                if structure == "vent":
                    for i in range(4):
                        yy = cy - sz * 0.2 + i * sz * 0.13
                        _line(lay, cx - sz * 0.45, yy, cx + sz * 0.45, yy, _shade(col, amb * 0.5), 0.8 * u)
            elif structure == "window":
                _poly(lay, (cx - sz * 0.4, cx + sz * 0.4, cx + sz * 0.4, cx - sz * 0.4),
                      (cy - sz * 0.5, cy - sz * 0.5, cy + sz * 0.5, cy + sz * 0.5), _shade((60, 70, 85), amb))
            elif structure == "beam":
                w = sz * 0.6
                _poly(lay, (cx - w, cx + w, cx + w * 1.1, cx - w * 1.1), (-5, -5, H + 5, H + 5), _shade(base, 0.8))
        if glow is not None:
            gl = np.zeros((H, W, 3), np.uint8)
            _ellipse(gl, glow[0], glow[1], glow[2], glow[2] * 0.6, (90, 90, 90))
            lay = cv2.add(lay, cv2.GaussianBlur(gl, (0, 0), max(1.0, glow[2] * 0.5)))
        img = lay.astype(np.float32)
    p.d["away_structure"] = structure
    # the camera may hang at any angle
    roll = p.uniform("away_roll_deg", -25.0, 25.0)
    if abs(roll) > 0.05 and structure != "none":
        ar = math.radians(abs(roll))
        sc = math.cos(ar) + math.sin(ar) * max(W / H, H / W)
        M = cv2.getRotationMatrix2D((W * 0.5, H * 0.5), roll, sc)
        img = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return img


# --------------------------------------------------------------------------
# near-lens cover
def cover_layer(p: _Params, light: dict, W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """A near-lens cover: ``(alpha, texture)``, alpha HxW float32 in [0, 1] (opacity per pixel), texture
    HxWx3 float32 (the cover's own radiance). Records ``cover_*`` parameters in ``p``."""
    rng = p.rng
    _, _, _, lnx, lny, _, _ = _grids(W, H)
    lh, lw = lnx.shape
    kind = p.choice("cover_kind", ("hand", "cloth", "tape", "sticker", "dirt", "lens_cap"),
                    (0.25, 0.22, 0.18, 0.12, 0.1, 0.13))
    frac = p.uniform("cover_fraction", 0.55, 1.0)
    if kind == "dirt":
        opacity = p.uniform("cover_opacity", 0.6, 0.9)
    elif kind == "tape":
        opacity = p.uniform("cover_opacity", 0.88, 1.0)
    else:
        opacity = p.uniform("cover_opacity", 0.92, 1.0)
    translucent = kind in ("cloth", "tape", "sticker") and p.flag("cover_partly_transparent", 0.25)
    if translucent:
        # thin light fabric, translucent tape or a plastic film: the scene
        # shows through, washed out
        opacity = round(min(opacity, 0.65 + 0.25 * p.u()), 4)
        p.d["cover_opacity"] = opacity
    # shape field: distance from an anchor (often outside the frame) plus noise
    ang = math.radians(p.uniform("cover_angle_deg", 0.0, 360.0))
    ca, sa = math.cos(ang), math.sin(ang)
    aspect = p.uniform("cover_aspect", 0.4, 1.0)
    ax = p.uniform("cover_anchor_x", -1.6, 1.6)
    ay = p.uniform("cover_anchor_y", -1.3, 1.3) * (H / W)
    irr = p.uniform("cover_irregularity", 0.05, 0.5)
    dx, dy = lnx - ax, lny - ay
    if kind == "tape":
        # straight-edged strip(s)
        field = -np.abs(dx * ca + dy * sa) + 0.02 * _smooth_noise(rng, 3, 3, lw, lh)
    else:
        u_ = dx * ca + dy * sa
        v_ = (-dx * sa + dy * ca) / aspect
        field = -np.sqrt(u_ * u_ + v_ * v_) + irr * 0.5 * _smooth_noise(rng, 5, 4, lw, lh)
    flat = field.ravel()
    kq = min(flat.size - 1, int((1.0 - frac) * flat.size))
    thr = float(np.partition(flat, kq)[kq]) if frac < 0.999 else float(flat.min()) - 1.0
    # soft edge: at least ~2.5 low-res pixels wide (no staircase after upsampling)
    soft = max(p.uniform("cover_edge_softness", 0.03, 0.3) * float(field.std() + 1e-3), 5.0 / lw)
    m = np.clip((field - thr) / soft + 0.5, 0.0, 1.0)
    if frac >= 0.97:
        m = np.maximum(m, 0.98)
    # texture (low resolution: the object is far out of focus)
    amb = light["amb"]
    lum = p.uniform("cover_brightness", 0.15, 0.9) * (0.4 + 0.6 * amb)
    gshade = 1.0 + p.uniform("cover_gradient", 0.0, 0.25) * (lnx * ca + lny * sa)
    if kind == "hand":
        col = np.array(p.choice("cover_rgb", _SKIN), np.float32)
        t = -lnx * sa + lny * ca
        fing = 1.0 - 0.1 * np.abs(np.sin(t * p.uniform("cover_finger_freq", 6.0, 12.0)))
        sh = gshade * fing * (1.0 + 0.08 * _smooth_noise(rng, 6, 5, lw, lh))
        tex = col * sh[..., None]
        edge = (m * (1.0 - m) * 4.0)[..., None]
        tex += edge * np.array((120, 40, 20), np.float32)  # translucent rim
    elif kind == "cloth":
        col = np.array(p.choice("cover_rgb", _COVER_COLOURS), np.float32)
        t = lnx * ca + lny * sa
        freq = p.uniform("cover_fold_freq", 3.0, 10.0)
        folds = 1.0 + 0.08 * np.sin(t * freq + 2.0 * _smooth_noise(rng, 4, 3, lw, lh))
        tex = col * (folds * gshade)[..., None]
    elif kind == "tape":
        col = np.array(p.choice("cover_rgb", ((40, 40, 42), (170, 170, 175), (160, 120, 70), (200, 200, 190),
                                               (30, 60, 130))), np.float32)
        tex = col * gshade[..., None] * (1.0 + 0.04 * _smooth_noise(rng, 8, 6, lw, lh))[..., None]
    elif kind == "sticker":
        col = np.array(p.choice("cover_rgb", _COVER_COLOURS), np.float32)
        tex = col * gshade[..., None]
    elif kind == "dirt":
        col = np.array(p.choice("cover_rgb", ((110, 85, 60), (90, 90, 85), (130, 110, 80))), np.float32)
        mot = 1.0 + 0.35 * _smooth_noise(rng, 10, 8, lw, lh)
        tex = col * mot[..., None]
        m = m * np.clip(mot * 0.8, 0.2, 1.0)
    else:  # lens cap / black cloth
        col = np.array(p.choice("cover_rgb", ((15, 15, 16), (28, 26, 25), (35, 38, 45))), np.float32)
        tex = col * gshade[..., None]
        lum = max(lum, 0.7)
    if translucent:
        film = p.choice("cover_film_rgb", ((205, 205, 200), (215, 208, 190), (185, 190, 195)))
        tex = tex * 0.3 + np.array(film, np.float32) * 0.7
        lum = max(lum, 0.65)
    tex *= lum
    a = cv2.resize((m * opacity).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    np.clip(a, 0.0, 1.0, out=a)
    tex = cv2.resize(np.ascontiguousarray(tex, dtype=np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    return a, tex


def composite_cover(img: np.ndarray, a: np.ndarray, tex: np.ndarray) -> np.ndarray:
    """``img`` (float32 HxWx3) behind a cover layer from :func:`cover_layer`; returns float32."""
    out = tex - img
    out *= cv2.merge([a, a, a])
    out += img
    return out


def apply_cover(p: _Params, img: np.ndarray, light: dict, W: int, H: int) -> np.ndarray:
    """Cover part of the view with a near object (hand, cloth, tape, sticker, dirt, lens cap); float32 in/out."""
    a, tex = cover_layer(p, light, W, H)
    return composite_cover(img, a, tex)


# --------------------------------------------------------------------------
# defocus
def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return img
    if sigma > 3.0:
        # blur at half resolution for speed; visually identical at this strength
        H, W = img.shape[:2]
        small = cv2.resize(img, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma * 0.5)
        return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(img, (0, 0), sigma)


def disc_blur(img: np.ndarray, radius: float) -> np.ndarray:
    H, W = img.shape[:2]
    scale = 2 if radius > 4.0 else 1
    r = radius / scale
    n = int(math.ceil(r))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float32)
    k = np.clip(r + 0.5 - np.sqrt(xx * xx + yy * yy), 0.0, 1.0)
    k /= k.sum()
    if scale > 1:
        small = cv2.resize(img, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
        small = cv2.filter2D(small, -1, k, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)


def apply_defocus_fault(p: _Params, img: np.ndarray, u: float) -> np.ndarray:
    """Strong Gaussian or disc (bokeh) defocus scaled by ``u`` (image size / 120 px); any dtype."""
    kind = p.choice("optics_defocus_kind", ("gaussian", "disc"), (0.5, 0.5))
    if kind == "gaussian":
        return blur(img, p.uniform("optics_blur_sigma", 2.8, 8.0) * u)
    return disc_blur(img, p.uniform("optics_disc_radius", 4.0, 10.0) * u)


# --------------------------------------------------------------------------
# sprayed / dirty lens
_DIRT_COLOURS = ((150, 140, 122), (118, 108, 92), (185, 185, 180), (96, 92, 88), (170, 160, 140))


def dirt_layer(p: _Params, light: dict, W: int, H: int) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Dirt on the front glass: ``(coverage, veil_opacity, blur_sigma, colour)``.

    ``coverage`` is HxW float32 in [0, 1]: spray (fine speckles), smudge (broad
    wiped patches) or droplets (round drops), denser around an anchor. Behind
    the dirt the scene is blurred by ``blur_sigma`` px and veiled by the
    dirt's scattered light (``colour``) with at most ``veil_opacity`` (< 0.5:
    the scene stays visible through it).
    """
    rng = p.rng
    u = min(W, H) / 120.0
    _, _, _, lnx, lny, _, _ = _grids(W, H)
    lh, lw = lnx.shape
    kind = p.choice("dirt_kind", ("spray", "smudge", "droplets"), (0.4, 0.3, 0.3))
    coverage = p.uniform("dirt_coverage", 0.25, 0.8)
    ax = p.uniform("dirt_anchor_x", -0.9, 0.9)
    ay = p.uniform("dirt_anchor_y", -0.6, 0.6) * (H / W)
    spread = p.uniform("dirt_spread", 0.5, 1.4)
    d2 = ((lnx - ax) ** 2 + (lny - ay) ** 2) * np.float32(1.0 / (spread * spread))
    if kind == "droplets":
        lay = np.zeros((lh, lw), np.float32)
        n = int(round(20 + 60 * coverage))
        with p.capture("dirt_droplet_draws"):
            for _ in range(n):
                x, y = p.u() * lw, p.u() * lh
                r = (0.4 + 1.6 * p.u() ** 2) * lw / 40.0
                cv2.circle(lay, (int(round(x * _ONE)), int(round(y * _ONE))), max(int(round(r * _ONE)), 8), 1.0, -1,
                           _AA, _SHIFT)
        m = lay * np.exp(-0.5 * d2)
        m = cv2.GaussianBlur(m, (0, 0), 0.7)
    else:
        if kind == "spray":
            field = _smooth_noise(rng, 16, 12, lw, lh) + 0.5 * _smooth_noise(rng, 4, 3, lw, lh) - d2
            soft = 0.25
        else:
            field = _smooth_noise(rng, 4, 3, lw, lh) - d2
            soft = 0.6
        flat = field.ravel()
        kq = min(flat.size - 1, int((1.0 - coverage) * flat.size))
        thr = float(np.partition(flat, kq)[kq])
        m = np.clip((field - thr) / (soft * float(field.std() + 1e-3)) + 0.5, 0.0, 1.0)
    veil = p.uniform("dirt_veil_opacity", 0.12, 0.45)
    sigma = p.uniform("dirt_blur_sigma", 1.2, 3.5) * u
    col = np.array(p.choice("dirt_rgb", _DIRT_COLOURS), np.float32) * np.float32(0.45 + 0.55 * min(light["amb"], 1.0))
    m = cv2.resize(np.ascontiguousarray(m, dtype=np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    np.clip(m, 0.0, 1.0, out=m)
    p.d["dirt_area_fraction"] = round(float(np.count_nonzero(m > 0.5)) / m.size, 4)
    return m, veil, sigma, col


def composite_dirt(img: np.ndarray, m: np.ndarray, veil: float, sigma: float, col: np.ndarray) -> np.ndarray:
    """``img`` (float32 HxWx3) seen through a dirt layer from :func:`dirt_layer`; returns float32."""
    m3 = cv2.merge([m, m, m])
    out = blur(img, sigma) - img
    out *= m3  # blurred behind the dirt
    out += img
    m3 *= np.float32(veil)
    veiled = col[None, None, :] - out
    veiled *= m3  # and veiled by the light it scatters
    out += veiled
    return out


def apply_dirty_lens(p: _Params, img: np.ndarray, light: dict, W: int, H: int) -> np.ndarray:
    """Sprayed/dirty lens: smudges, droplets or spray blur and veil parts of the view; float32 in/out."""
    m, veil, sigma, col = dirt_layer(p, light, W, H)
    return composite_dirt(img, m, veil, sigma, col)


# --------------------------------------------------------------------------
# too dark
def sample_too_dark(p: _Params) -> dict:
    """Exposure collapsed to a few percent (failed IR illuminator, stuck shutter, lights off) with a high gain;
    sometimes a faint infrared greyscale frame. Returns ``{ir, exposure, gain, chroma_noise}``."""
    ir = bool(p.flag("cam_ir_mode", 0.3))
    if ir:
        exposure = p.uniform("cam_exposure", 0.04, 0.14)
    else:
        exposure = p.uniform("cam_exposure", 0.015, 0.1)
    gain = p.uniform("cam_gain", 4.0, 20.0)
    chroma = 0.0 if ir else p.uniform("cam_chroma_noise", 0.2, 0.8)
    return {"ir": ir, "exposure": exposure, "gain": gain, "chroma_noise": chroma}


def apply_too_dark(img: np.ndarray, exposure: float, ir: bool = False) -> np.ndarray:
    """uint8 RGB scaled to ``exposure`` of its level (greyscale in IR mode)."""
    if ir:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img = cv2.merge([g, g, g])
    lut = np.clip(np.arange(256, dtype=np.float64) * float(exposure) + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


# --------------------------------------------------------------------------
# the scene engine's side
def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0.0, 255.0).astype(np.uint8)


def fault_light(light, time_of_day: str) -> dict:
    """The fault functions' light dict from the engine's :class:`~synthetic.scene.render.Light`."""
    s = np.asarray(light.sun_dir, float)
    s = s / (np.linalg.norm(s) + 1e-12)
    g = np.asarray(light.amb, float) + np.asarray(light.sun, float) * max(float(s[2]), 0.0)
    return {"tod": time_of_day, "amb": round(float(np.clip(g.mean(), 0.2, 1.1)), 4),
            "top": [int(c) for c in light.sky_top], "hor": [int(c) for c in light.sky_horizon],
            "lamp": tuple(int(round(255.0 * min(1.0, float(c)))) for c in light.lamp_rgb)}


class CameraFault:
    """One frame's camera fault in the scene engine's effect chain.

    The engine calls :meth:`away_view` (``turned_away``: replaces the scene),
    :meth:`lens` after the weather and before auto exposure (``covered``,
    ``dirty_lens``, ``too_dark``), :meth:`optics` with the defocus step and
    :meth:`sensor` after the sensor noise. ``hidden`` (HxW bool, ``covered``
    only) marks the pixels the cover hides; ``gain`` (``too_dark`` only) is the
    gain that amplifies the noise; ``labels`` is the rule of
    :data:`FAULT_LABEL_RULES`; ``params`` records every value drawn.
    """

    def __init__(self, kind: str, rng: np.random.Generator, light: dict, size, surface: str = "road"):
        if kind not in CAMERA_FAULTS:
            raise ValueError(f"camera fault must be one of {CAMERA_FAULTS}, got {kind!r}")
        self.kind = kind
        self.W, self.H = int(size[0]), int(size[1])
        self.light = light
        self.surface = surface
        self.labels = FAULT_LABEL_RULES[kind]
        self.params: dict = {}
        self.p = _Params(rng, self.params)
        self.hidden: np.ndarray | None = None
        self.gain: float | None = None
        self._layer = None
        W, H = self.W, self.H
        if kind == "covered":
            a, tex = cover_layer(self.p, light, W, H)
            self._layer = (a, tex)
            self.hidden = a >= HIDDEN_ALPHA
            self.params["hidden_fraction"] = round(float(np.count_nonzero(self.hidden)) / self.hidden.size, 4)
        elif kind == "dirty_lens":
            self._layer = dirt_layer(self.p, light, W, H)
        elif kind == "too_dark":
            self._layer = sample_too_dark(self.p)
            self.gain = self._layer["gain"]

    def away_view(self) -> tuple[np.ndarray, np.ndarray]:
        """``turned_away``: the uint8 view (sky, wall or ceiling; no sky indoors) and its depth (metres)."""
        weights = (0.0, 0.6, 0.4) if self.surface == "indoor" else (0.45, 0.45, 0.1)
        img = render_away(self.p, self.light, self.W, self.H, weights)
        far = self.params.get("away_view") == "sky"
        return _u8(img), np.full((self.H, self.W), 1e4 if far else 3.0, np.float32)

    def lens(self, img: np.ndarray) -> np.ndarray:
        if self.kind == "covered":
            a, tex = self._layer
            return _u8(composite_cover(img.astype(np.float32), a, tex))
        if self.kind == "dirty_lens":
            return _u8(composite_dirt(img.astype(np.float32), *self._layer))
        if self.kind == "too_dark":
            return apply_too_dark(img, self._layer["exposure"], self._layer["ir"])
        return img

    def optics(self, img: np.ndarray) -> np.ndarray:
        if self.kind == "defocused":
            return apply_defocus_fault(self.p, img, min(self.W, self.H) / 120.0)
        return img

    def sensor(self, img: np.ndarray, read_noise: float) -> np.ndarray:
        """``too_dark``: low-resolution chroma noise (``read_noise`` grey levels, amplified by the gain)."""
        if self.kind != "too_dark" or not self._layer["chroma_noise"]:
            return img
        H, W = self.H, self.W
        cn = _gauss_noise(self.p.rng, (max(2, H // 4), max(2, W // 4), 3))
        cn = cv2.resize(cn, (W, H), interpolation=cv2.INTER_LINEAR)
        cn *= np.float32(self._layer["chroma_noise"] * read_noise)
        cn += img
        return _u8(cn)


ParamRecorder = _Params
