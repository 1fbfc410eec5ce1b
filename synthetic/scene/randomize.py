"""Domain randomization: per-frame lighting, weather and camera effects.

Every randomized quantity is a named parameter with a range in
:data:`DEFAULT_RANGES` (override any of them through
``SceneConfig.randomization``); :func:`sample_params` draws one frame's values
(JSON-serialisable, rounded so the recorded value is exactly the one used),
:func:`light_from_params` turns them into the renderer's :class:`Light` and
:func:`apply_effects` applies the image effects in a fixed order.

Each effect is a small composable function ``apply_x(img, rng, strength,
depth=None, **explicit) -> img`` on HxWx3 uint8 RGB images; ``strength`` is in
the unit given in its docstring. Sizes in pixels are for a 640-px wide image
and scale with the width.

Camera faults (``camera_fault_prob``, ``camera_faults``; off by default) come
from :mod:`synthetic.scene.faults`: a frame gets one fault with probability
``camera_fault_prob``, drawn from ``camera_faults`` (a list of names or a dict
of weights over :data:`~synthetic.scene.faults.CAMERA_FAULTS`) and recorded
as ``camera_fault`` (``none`` without one). The fault's own values are drawn
when the frame is rendered (see :class:`~synthetic.scene.faults.CameraFault`).
"""

from __future__ import annotations

import math
import numbers
from statistics import NormalDist

import cv2
import numpy as np

from .faults import CAMERA_FAULTS
from .render import Light

__all__ = [
    "DEFAULT_RANGES", "TIMES_OF_DAY", "CAMERA_FAULTS", "validate_ranges", "sample_params", "light_from_params",
    "apply_effects", "apply_glare", "apply_fog", "apply_rain", "apply_snow", "apply_night_ir", "apply_exposure",
    "apply_defocus", "apply_motion_blur", "apply_sensor_noise", "apply_jpeg",
]

TIMES_OF_DAY = ("day", "overcast", "dusk", "night")

#: name -> probability (float in [0, 1]), [lo, hi] range, or weights (time_of_day, camera_faults)
DEFAULT_RANGES: dict = {
    "time_of_day": {"day": 0.45, "overcast": 0.2, "dusk": 0.1, "night": 0.25},
    "sun_elevation_deg": [20.0, 70.0],
    "dusk_sun_elevation_deg": [4.0, 14.0],
    "sun_azimuth_deg": [0.0, 360.0],
    "sun_intensity": [0.6, 0.9],
    "ambient": [0.35, 0.55],
    "colour_temperature": [-1.0, 1.0],
    "shadows_prob": 0.85,
    "shadow_softness_px": [0.6, 2.0],
    "night_ambient": [0.06, 0.16],
    "night_ir_prob": 0.4,
    "lamp_intensity": [0.6, 1.1],
    "glare_strength": [0.5, 1.0],
    "rain_prob": 0.12,
    "rain_strength": [0.3, 1.0],
    "snow_prob": 0.05,
    "snow_strength": [0.3, 1.0],
    "fog_prob": 0.1,
    "fog_visibility_m": [25.0, 160.0],
    "motion_blur_prob": 0.12,
    "motion_blur_px": [2.0, 9.0],
    "defocus_prob": 0.1,
    "defocus_sigma_px": [0.7, 2.2],
    "noise_sigma": [0.8, 5.0],
    "jpeg_prob": 0.6,
    "jpeg_quality": [35, 95],
    "exposure_prob": 0.15,
    "exposure_ev": [-1.3, 1.3],
    "camera_fault_prob": 0.0,
    "camera_faults": list(CAMERA_FAULTS),
}

_NOISE_LUT = np.array([NormalDist().inv_cdf((k + 0.5) / 256.0) for k in range(256)], np.float32)


# --------------------------------------------------------------------------
# ranges
def validate_ranges(overrides: dict | None, name: str = "randomization") -> dict:
    """Merge ``overrides`` into the defaults; raise ValueError naming a bad entry."""
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{name} must be a dict of parameter ranges, got {type(overrides).__name__}")
    out = {k: (dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v))
           for k, v in DEFAULT_RANGES.items()}
    for k, v in overrides.items():
        if k not in DEFAULT_RANGES:
            raise ValueError(f"{name}.{k} is not a known randomization parameter; known: {sorted(DEFAULT_RANGES)}")
        ref = DEFAULT_RANGES[k]
        if k == "time_of_day":
            if isinstance(v, str):
                v = {v: 1.0}
            if isinstance(v, (list, tuple)):
                v = {t: 1.0 for t in v}
            if not isinstance(v, dict) or not v:
                raise ValueError(f"{name}.time_of_day must be a name, a list of names or a dict of weights over "
                                 f"{TIMES_OF_DAY}, got {v!r}")
            for t, w in v.items():
                if t not in TIMES_OF_DAY:
                    raise ValueError(f"{name}.time_of_day has unknown value {t!r}; known: {TIMES_OF_DAY}")
                if not _num(w) or w < 0:
                    raise ValueError(f"{name}.time_of_day weight for {t!r} must be a number >= 0, got {w!r}")
            if sum(v.values()) <= 0:
                raise ValueError(f"{name}.time_of_day weights must not all be 0")
            out[k] = {t: float(v.get(t, 0.0)) for t in TIMES_OF_DAY}
        elif k == "camera_faults":
            out[k] = _fault_weights(v, f"{name}.{k}")
        elif isinstance(ref, float) and k.endswith("_prob"):
            if not _num(v) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}.{k} must be a probability in [0, 1], got {v!r}")
            out[k] = float(v)
        else:
            if _num(v):
                v = [v, v]
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) for x in v)):
                raise ValueError(f"{name}.{k} must be a number or a [low, high] pair, got {v!r}")
            lo, hi = float(v[0]), float(v[1])
            if lo > hi:
                raise ValueError(f"{name}.{k} must have low <= high, got {v!r}")
            lim = _LIMITS.get(k)
            if lim is not None and (lo < lim[0] or hi > lim[1]):
                raise ValueError(f"{name}.{k} must lie within [{lim[0]}, {lim[1]}], got {v!r}")
            out[k] = [lo, hi]
    if not isinstance(out["camera_faults"], dict):
        out["camera_faults"] = _fault_weights(out["camera_faults"], f"{name}.camera_faults")
    return out


def _fault_weights(v, name: str) -> dict:
    """A fault name, a list of names or a dict of weights -> weights over every fault (in CAMERA_FAULTS order)."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, (list, tuple)):
        if not v:
            raise ValueError(f"{name} must name at least one fault of {CAMERA_FAULTS}, got an empty list")
        bad = [f for f in v if not isinstance(f, str) or f not in CAMERA_FAULTS]
        if bad:
            raise ValueError(f"{name} has unknown fault {bad[0]!r}; known: {CAMERA_FAULTS}")
        v = {f: 1.0 for f in v}
    if not isinstance(v, dict) or not v:
        raise ValueError(f"{name} must be a fault name, a list of names or a dict of weights over {CAMERA_FAULTS}, "
                         f"got {v!r}")
    for f, w in v.items():
        if f not in CAMERA_FAULTS:
            raise ValueError(f"{name} has unknown fault {f!r}; known: {CAMERA_FAULTS}")
        if not _num(w) or w < 0:
            raise ValueError(f"{name} weight for {f!r} must be a number >= 0, got {w!r}")
    if sum(v.values()) <= 0:
        raise ValueError(f"{name} weights must not all be 0")
    return {f: float(v.get(f, 0.0)) for f in CAMERA_FAULTS}


_LIMITS = {
    "sun_elevation_deg": (1.0, 90.0), "dusk_sun_elevation_deg": (1.0, 30.0), "sun_azimuth_deg": (-360.0, 720.0),
    "sun_intensity": (0.0, 3.0), "ambient": (0.0, 3.0), "colour_temperature": (-3.0, 3.0),
    "shadow_softness_px": (0.0, 20.0), "night_ambient": (0.0, 1.0), "lamp_intensity": (0.0, 5.0),
    "glare_strength": (0.0, 3.0), "rain_strength": (0.0, 1.0), "snow_strength": (0.0, 1.0),
    "fog_visibility_m": (5.0, 10000.0), "motion_blur_px": (0.0, 60.0), "defocus_sigma_px": (0.0, 20.0),
    "noise_sigma": (0.0, 60.0), "jpeg_quality": (1.0, 100.0), "exposure_ev": (-4.0, 4.0),
}


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


class _Draw:
    def __init__(self, rng: np.random.Generator, ranges: dict, out: dict):
        self.rng, self.r, self.d = rng, ranges, out

    def u(self, key, nd=4, rkey=None):
        lo, hi = self.r[rkey or key]
        v = round(float(lo + (hi - lo) * self.rng.random()), nd)
        self.d[key] = v
        return v

    def flag(self, key):
        v = bool(self.rng.random() < self.r[key])
        self.d[key.replace("_prob", "")] = v
        return v


def sample_params(rng: np.random.Generator, ranges: dict, surface: str = "road") -> dict:
    """Draw one frame's randomized values (every value is drawn, in a fixed order)."""
    d: dict = {}
    q = _Draw(rng, ranges, d)
    w = ranges["time_of_day"]
    names = list(TIMES_OF_DAY)
    p = np.array([w[t] for t in names], float)
    r = rng.random() * p.sum()
    tod = names[int(min(np.searchsorted(np.cumsum(p), r, side="right"), len(names) - 1))]
    d["time_of_day"] = tod
    q.u("sun_azimuth_deg", 2)
    if tod == "dusk":
        q.u("sun_elevation_deg", 2, "dusk_sun_elevation_deg")
        rng.random()
    else:
        q.u("sun_elevation_deg", 2)
        rng.random()
    q.u("sun_intensity", 3)
    q.u("ambient", 3)
    q.u("colour_temperature", 3)
    shadows = q.flag("shadows_prob")
    q.u("shadow_softness_px", 2)
    q.u("night_ambient", 3)
    ir = q.flag("night_ir_prob")
    q.u("lamp_intensity", 3)
    q.u("glare_strength", 3)
    if tod not in ("day", "dusk"):
        d["shadows"] = False
    if tod != "night":
        d["night_ir"] = False
    else:
        d["night_ir"] = ir
    del shadows
    for eff, key in (("rain", "rain_strength"), ("snow", "snow_strength")):
        on = q.flag(f"{eff}_prob")
        q.u(key, 3)
        if not on:
            d[key] = 0.0
    if d["rain"] and d["snow"]:
        d["snow"] = False
        d["snow_strength"] = 0.0
    on = q.flag("fog_prob")
    q.u("fog_visibility_m", 1)
    if not on:
        d["fog_visibility_m"] = None
    on = q.flag("motion_blur_prob")
    q.u("motion_blur_px", 2)
    d["motion_blur_angle_deg"] = round(float(rng.uniform(0.0, 180.0)), 2)
    if not on:
        d["motion_blur_px"] = 0.0
    on = q.flag("defocus_prob")
    q.u("defocus_sigma_px", 3)
    if not on:
        d["defocus_sigma_px"] = 0.0
    q.u("noise_sigma", 3)
    on = q.flag("jpeg_prob")
    lo, hi = ranges["jpeg_quality"]
    d["jpeg_quality"] = int(round(lo + (hi - lo) * rng.random())) if on else None
    on = q.flag("exposure_prob")
    q.u("exposure_ev", 3)
    if not on:
        d["exposure_ev"] = 0.0
    d["rain_angle_deg"] = round(float(rng.uniform(-20.0, 20.0)), 2)
    if surface == "indoor":
        for k in ("rain", "snow"):
            d[k] = False
            d[f"{k}_strength"] = 0.0
    # camera fault: drawn last, so the values above do not depend on the fault settings
    on = rng.random() < ranges.get("camera_fault_prob", 0.0)
    r = rng.random()
    fault = "none"
    if on:
        w = ranges["camera_faults"]
        if not isinstance(w, dict):
            w = _fault_weights(w, "camera_faults")
        p = np.array([w[f] for f in CAMERA_FAULTS], float)
        fault = CAMERA_FAULTS[int(min(np.searchsorted(np.cumsum(p), r * p.sum(), side="right"), len(p) - 1))]
    d["camera_fault"] = fault
    return d


def light_from_params(d: dict, surface: str = "road") -> Light:
    """The renderer's light for sampled params ``d``."""
    tod = d["time_of_day"]
    el = math.radians(d["sun_elevation_deg"])
    az = math.radians(d["sun_azimuth_deg"])
    sdir = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    ct = d["colour_temperature"]
    warm = np.array([1.0 + 0.06 * ct, 1.0, 1.0 - 0.07 * ct])
    si, amb = d["sun_intensity"], d["ambient"]
    snow = d.get("snow") or d.get("rain")
    if surface == "indoor":
        # ceiling lights instead of the sun; "night" = after-hours lighting
        sdir = (0.15 * math.cos(az), 0.15 * math.sin(az), 1.0)
        if tod == "night" and not d["night_ir"]:
            return Light(sdir, tuple(0.15 * warm), tuple(np.array([0.32, 0.32, 0.34]) * warm), False, 2.0,
                         lamps=0.5 * d["lamp_intensity"], lamp_rgb=(1.0, 0.95, 0.85))
        if tod == "night":
            return Light(sdir, (0.0, 0.0, 0.0), (0.9, 0.9, 0.9), False, ir=True)
        return Light(sdir, tuple(0.3 * warm), tuple(np.array([0.68, 0.68, 0.7]) * warm * (0.8 + 0.4 * amb)),
                     d["shadows"], 3.0 * d["shadow_softness_px"])
    if tod == "day" and not snow:
        sun = si * np.array([1.0, 0.97, 0.9]) * warm
        a = amb * np.array([0.92, 0.97, 1.08]) * warm
        return Light(sdir, tuple(sun), tuple(a), d["shadows"], d["shadow_softness_px"],
                     (85, 135, 205), (190, 208, 225), (238, 238, 240))
    if tod in ("overcast", "day"):
        a = (amb + 0.35) * np.array([0.97, 0.98, 1.02]) * warm
        return Light(sdir, tuple(0.12 * si * warm), tuple(a), False, 3.0,
                     (150, 156, 166), (198, 201, 206), (215, 217, 222))
    if tod == "dusk":
        sun = 0.75 * si * np.array([1.0, 0.72, 0.48])
        a = (0.55 * amb + 0.05) * np.array([0.85, 0.85, 1.05])
        return Light(sdir, tuple(sun), tuple(a), d["shadows"] and not snow, d["shadow_softness_px"] * 1.5,
                     (60, 72, 122), (232, 158, 108), (200, 150, 140), lamps=0.35 * d["lamp_intensity"],
                     lamp_rgb=(1.0, 0.85, 0.62), headlights=True)
    # night
    if d["night_ir"]:
        return Light(sdir, (0.0, 0.0, 0.0), (0.9, 0.9, 0.9), False, 1.0, (95, 95, 95), (120, 120, 120),
                     (110, 110, 110), lamps=0.0, headlights=True, ir=True)
    na = d["night_ambient"]
    return Light(sdir, (0.0, 0.0, 0.0), tuple(na * np.array([0.8, 0.85, 1.1])), False, 1.0,
                 (8, 10, 22), (48, 42, 52), (38, 36, 44), lamps=d["lamp_intensity"],
                 lamp_rgb=(1.0, 0.82, 0.55), headlights=True)


# --------------------------------------------------------------------------
# effects
def _scale(img) -> float:
    return img.shape[1] / 640.0


def apply_glare(img, rng, strength, depth=None, lights=()):
    """Headlight blooms: ``strength`` ~0.3-1.5; ``lights`` [(u, v, radius_px, ...)]."""
    if strength <= 0 or not lights:
        return img
    H, W = img.shape[:2]
    q = 4
    lw, lh = max(1, W // q), max(1, H // q)
    layer = np.zeros((lh, lw), np.float32)
    core = np.zeros((H, W), np.uint8)
    cap = 0.012 * W
    for L in lights:
        u, v, r = L[0], L[1], L[2]
        rr = min(max(1.0, r * 1.5), cap)
        cv2.circle(layer, (int(u / q), int(v / q)), max(1, int(rr * 2.5 / q)), 1.0, -1, cv2.LINE_AA)
        cv2.circle(core, (int(round(u * 16 - 8)), int(round(v * 16 - 8))), max(16, int(rr * 16)), 255, -1,
                   cv2.LINE_AA, 4)
        cv2.line(core, (int(u - rr * 6), int(v)), (int(u + rr * 6), int(v)), 110, 1, cv2.LINE_AA)
    sig = max(1.5, 6.0 * _scale(img) / q * 2)
    layer = cv2.GaussianBlur(layer, (0, 0), sig)
    layer = cv2.resize(layer, (W, H), interpolation=cv2.INTER_LINEAR)
    bloom = np.clip(layer * (255.0 * 0.9 * strength), 0, 255).astype(np.uint8)
    core = cv2.GaussianBlur(core, (0, 0), max(0.8, _scale(img)))
    add = cv2.max(bloom, core)
    tint = cv2.merge([add, cv2.convertScaleAbs(add, alpha=0.97), cv2.convertScaleAbs(add, alpha=0.88)])
    return cv2.add(img, tint)


def apply_fog(img, rng, strength, depth=None, visibility=None, colour=(190, 193, 198)):
    """Depth-based fog; ``strength`` in [0, 1] (visibility 400 m .. 20 m) unless ``visibility`` (m) is given."""
    if visibility is None:
        if strength <= 0:
            return img
        visibility = 20.0 + 380.0 * (1.0 - min(1.0, strength))
    H, W = img.shape[:2]
    if depth is None:  # no depth: assume distance grows towards the top of the image
        rows = np.linspace(200.0, 5.0, H, dtype=np.float32)[:, None]
        depth = np.broadcast_to(rows, (H, W))
    beta = 3.0 / float(visibility)
    t = cv2.exp(np.asarray(depth, np.float32) * np.float32(-beta))
    t3 = cv2.merge([t, t, t])
    out = img.astype(np.float32)
    col = np.asarray(colour, np.float32)
    out -= col
    out *= t3
    out += col
    return cv2.convertScaleAbs(out)


def _line_layer(rng, W, H, n, length, angle_deg, value):
    """Random short line segments (drawn at <= 640 px width and scaled up)."""
    s = max(1.0, W / 640.0)
    lw, lh = int(round(W / s)), int(round(H / s))
    layer = np.zeros((lh, lw), np.uint8)
    if n > 0:
        a = math.radians(angle_deg)
        x = rng.uniform(0, lw, n)
        y = rng.uniform(-length, lh, n)
        ln = length * rng.uniform(0.5, 1.0, n)
        seg = np.stack([x, y, x + math.sin(a) * ln, y + math.cos(a) * ln], -1)
        seg = np.rint(seg * 16).astype(np.int32).reshape(n, 2, 2)
        cv2.polylines(layer, list(seg), False, int(value), 1, cv2.LINE_AA, 4)
    if s > 1.0:
        layer = cv2.resize(layer, (W, H), interpolation=cv2.INTER_LINEAR)
    return layer


def apply_rain(img, rng, strength, depth=None, angle=0.0):
    """Rain streaks plus a wet, low-contrast look; ``strength`` in [0, 1]."""
    if strength <= 0:
        return img
    H, W = img.shape[:2]
    area = (W / max(1.0, W / 640.0)) * (H / max(1.0, W / 640.0))
    n = int(area * 0.006 * strength)
    layer = _line_layer(rng, W, H, n, 6 + 12 * strength, angle, 46 + int(30 * strength))
    layer = cv2.GaussianBlur(layer, (3, 3), 0.8)
    k = 0.25 * strength
    out = cv2.addWeighted(img, 0.92 - k, np.full_like(img, 140), k, 0.0)
    return cv2.add(out, cv2.merge([layer, layer, layer]))


def apply_snow(img, rng, strength, depth=None):
    """Falling snow: small sharp and large soft flakes, plus a whitened, hazy look; ``strength`` in [0, 1]."""
    if strength <= 0:
        return img
    H, W = img.shape[:2]
    s = max(1.0, W / 640.0)
    lw, lh = int(round(W / s)), int(round(H / s))
    lay = np.zeros((lh, lw), np.uint8)
    n_small = int(lw * lh * 0.004 * strength)
    n_big = int(lw * lh * 0.0007 * strength)
    pts = np.stack([rng.uniform(0, lw, n_small + n_big), rng.uniform(0, lh, n_small + n_big)], -1)
    rad = np.concatenate([rng.uniform(0.6, 1.2, n_small), rng.uniform(1.4, 2.6, n_big)])
    val = rng.integers(170, 256, n_small + n_big)
    centres = np.rint(pts * 16 - 8).astype(np.int64).tolist()
    radii = np.rint(rad * 16).astype(np.int64).tolist()
    for (x, y), r, v in zip(centres, radii, val.tolist()):
        cv2.circle(lay, (x, y), r, int(v), -1, cv2.LINE_AA, 4)
    lay = cv2.GaussianBlur(lay, (3, 3), 0.7)
    if s > 1.0:
        lay = cv2.resize(lay, (W, H), interpolation=cv2.INTER_LINEAR)
    k = 0.3 * strength
    out = cv2.addWeighted(img, 1.0 - k, np.full_like(img, 218), k, 0.0)
    return cv2.max(out, cv2.merge([lay, lay, lay]))


def apply_night_ir(img, rng, strength, depth=None):
    """Infrared night look: greyscale, IR-illuminator falloff with distance, vignetting; ``strength`` in [0, 1]."""
    H, W = img.shape[:2]
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if depth is not None:
        reach = 10.0 + 25.0 * (1.0 - strength)
        fall = np.clip((reach / np.maximum(np.asarray(depth, np.float32), 1.0)) ** 2, 0.0, 1.4)
        g *= 0.12 + 0.88 * fall
    yy, xx = np.ogrid[0:H, 0:W]
    r2 = ((xx - W / 2) / (W / 2)) ** 2 * 0.6 + ((yy - H / 2) / (H / 2)) ** 2 * 0.4
    g *= (1.0 - 0.45 * strength * r2).astype(np.float32)
    g = cv2.convertScaleAbs(g, alpha=1.05)
    return cv2.merge([g, g, g])


def apply_exposure(img, rng, strength, depth=None):
    """Exposure error of ``strength`` EV (negative: under-exposed), with a soft highlight shoulder."""
    if strength == 0:
        return img
    x = np.arange(256, dtype=np.float64) / 255.0 * 2.0 ** float(strength)
    knee = 0.8
    y = np.where(x < knee, x, knee + (1.0 - knee) * (1.0 - np.exp(-(x - knee) / (1.0 - knee))))
    lut = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def _gain(img, gain: float):
    if abs(gain - 1.0) < 1e-3:
        return img
    return cv2.convertScaleAbs(img, alpha=gain)


def apply_defocus(img, rng, strength, depth=None):
    """Out-of-focus blur of ``strength`` sigma pixels."""
    if strength <= 0:
        return img
    return cv2.GaussianBlur(img, (0, 0), float(strength) * _scale(img))


def _line_kernel(L: float, angle: float) -> np.ndarray:
    n = int(math.ceil(L)) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    a = math.radians(angle)
    dx, dy = math.cos(a) * L / 2, math.sin(a) * L / 2
    cv2.line(k, (int(round((c - dx) * 16)), int(round((c - dy) * 16))),
             (int(round((c + dx) * 16)), int(round((c + dy) * 16))), 1.0, 1, cv2.LINE_AA, 4)
    k /= max(float(k.sum()), 1e-6)
    return k


def apply_motion_blur(img, rng, strength, depth=None, angle=None):
    """Camera-shake blur: a line of ``strength`` pixels at ``angle`` degrees."""
    L = float(strength) * _scale(img)
    if L < 1.0:
        return img
    if angle is None:
        angle = float(rng.uniform(0, 180))
    m = int(math.ceil(L / 11.0))  # long lines: m shifted copies of a short line (direct filtering stays fast)
    out = cv2.filter2D(img, -1, _line_kernel(L / m, angle), borderType=cv2.BORDER_REFLECT)
    if m == 1:
        return out
    a = math.radians(angle)
    H, W = img.shape[:2]
    acc = None
    for j in range(m):
        o = (j - (m - 1) / 2.0) * L / m
        M = np.float32([[1, 0, round(o * math.cos(a))], [0, 1, round(o * math.sin(a))]])
        sh = cv2.warpAffine(out, M, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
        acc = sh.astype(np.uint16) if acc is None else cv2.add(acc, sh, dtype=cv2.CV_16U)
    return cv2.convertScaleAbs(acc, alpha=1.0 / m)


def apply_sensor_noise(img, rng, strength, depth=None):
    """Gaussian sensor noise of ``strength`` grey levels (sigma)."""
    if strength <= 0:
        return img
    lut = np.clip(128.0 + _NOISE_LUT * float(strength) + 0.5, 0, 255).astype(np.uint8)
    b = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)
    noise = cv2.LUT(b, lut)
    if img.ndim == 3 and _is_grey(img):
        noise = cv2.merge([noise[..., 0]] * 3)
    return cv2.addWeighted(img, 1.0, noise, 1.0, -128.0)


def _is_grey(img) -> bool:
    h, w = img.shape[:2]
    s = img[:: max(1, h // 8), :: max(1, w // 8)]
    return bool((s[..., 0] == s[..., 1]).all() and (s[..., 1] == s[..., 2]).all())


def apply_jpeg(img, rng, strength, depth=None, quality=None):
    """JPEG round trip; ``strength`` in [0, 1] (quality 95 .. 10) unless ``quality`` is given."""
    if quality is None:
        quality = int(round(95 - 85 * min(1.0, max(0.0, strength))))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return img
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def apply_effects(img: np.ndarray, d: dict, rng: np.random.Generator, depth=None, headlights=(),
                  fault=None) -> np.ndarray:
    """Apply the image effects of params ``d`` in a fixed order; adds ``ae_gain`` to ``d``.

    ``fault`` (a :class:`~synthetic.scene.faults.CameraFault`) is applied where it acts: at the lens after
    the weather (cover, dirt, collapsed exposure: the camera's gain then only amplifies the noise), with
    the optics (defocus) and at the sensor (chroma noise).
    """
    night = d["time_of_day"] == "night"
    if (night or d["time_of_day"] == "dusk") and headlights:
        img = apply_glare(img, rng, d["glare_strength"] * (1.0 if night else 0.5), lights=headlights)
    if d["fog_visibility_m"]:
        img = apply_fog(img, rng, 1.0, depth, visibility=d["fog_visibility_m"])
    if d["night_ir"]:
        img = apply_night_ir(img, rng, 0.6, depth)
    if d["rain"]:
        img = apply_rain(img, rng, d["rain_strength"], angle=d["rain_angle_deg"])
    if d["snow"]:
        img = apply_snow(img, rng, d["snow_strength"])
    if fault is not None:
        img = fault.lens(img)
    if fault is not None and fault.gain is not None:
        gain = round(float(fault.gain), 3)  # exposure collapsed at the maximum gain
        d["ae_gain"] = gain
    else:
        # auto exposure: cameras raise their gain in the dark (and so the noise)
        m = float(np.mean(cv2.mean(img[::4, ::4])[:3]))
        gain = 1.0
        if m < 70.0:
            gain = round(min(3.5, 70.0 / max(m, 8.0)) ** 0.8, 3)
        d["ae_gain"] = gain
        img = _gain(img, gain)
    if d["exposure_ev"]:
        img = apply_exposure(img, rng, d["exposure_ev"])
    if d["defocus_sigma_px"]:
        img = apply_defocus(img, rng, d["defocus_sigma_px"])
    if fault is not None:
        img = fault.optics(img)
    if d["motion_blur_px"]:
        img = apply_motion_blur(img, rng, d["motion_blur_px"], angle=d["motion_blur_angle_deg"])
    sigma = d["noise_sigma"] * math.sqrt(gain) * (1.6 if night else 1.0)
    img = apply_sensor_noise(img, rng, sigma)
    if fault is not None:
        img = fault.sensor(img, sigma)
    if d["jpeg_quality"] is not None:
        img = apply_jpeg(img, rng, 0.0, quality=d["jpeg_quality"])
    return img
