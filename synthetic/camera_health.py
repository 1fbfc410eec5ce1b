"""Procedural surveillance-camera frames labelled with camera-health classes.

This is the toolkit's built-in default training data: it needs no external
files, downloads nothing and is fully deterministic. Every frame is drawn from
a per-image seed with numpy/OpenCV vectorised primitives:

* a base scene seen by an elevated, tilted surveillance camera: sky or a
  facade at the top, a ground plane in true perspective (asphalt road,
  parking lot, paving, plaza slabs or grass, with lane, stall or tile lines
  converging to a vanishing point), buildings, lamp posts, trees, people and
  vehicles scaled by their depth, lighting level (day, overcast, dusk, night)
  and colour cast;
* a camera model: auto exposure, white balance, vignetting, sensor noise,
  ISP softness/sharpening, chroma subsampling and an on-screen display.

The classes (:data:`CLASSES`) alter that pipeline:

``normal``       the scene itself, with moderate exposure, noise and softness.
``covered``      55-100 % of the view hidden by a near object (hand, cloth,
                 tape, sticker, dirt, lens cap) with soft edges, its own
                 texture and sometimes partial transparency.
``defocused``    strong Gaussian or disc (bokeh) blur scaled with image size.
``too_dark``     exposure reduced to a few percent with amplified noise,
                 sometimes as a faint infrared-like greyscale frame.
``turned_away``  the camera looks at the sky, a wall or a ceiling: a mostly
                 uniform or gradient surface with little structure.

One more fault can be asked for by name (:data:`EXTRA_CLASSES`, not part of
the default class list so existing datasets and recipes keep their classes):

``dirty_lens``   a sprayed/dirty lens: spray, smudges or droplets blur and
                 veil parts of the view (the scene stays visible through them).

The fault implementations live in :mod:`synthetic.scene.faults` and are shared
with the scene engine, where they are domain-randomization parameters
(``randomization.camera_fault_prob`` / ``camera_faults``).

Usage::

    from synthetic.camera_health import render_frame, generate_dataset
    frame, params = render_frame("covered", seed=7)          # HxWx3 uint8 RGB
    generate_dataset("data/camera_health", num_per_class=200)

or ``python -m synthetic.camera_health OUT --per-class N --size W H --seed S``.

Same arguments give byte-identical output with the same numpy, OpenCV and
Pillow builds (results do not depend on the OpenCV thread count). The base
scene and the on-screen display depend on the seed only, the camera fault on
(seed, label). At 160x120 one frame takes ~3 ms on one CPU core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import numbers
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from synthetic import __version__ as GENERATOR_VERSION
from synthetic.scene.faults import (  # the camera faults are shared with the scene engine
    _SKIN,
    _circle,
    _cov,
    _ellipse,
    _gauss_noise,
    _grids,
    _line,
    _Params,
    _pdist,
    _poly,
    _pts,
    _shade,
    _smooth_noise,
    apply_defocus_fault,
    apply_dirty_lens,
    sample_too_dark,
)
from synthetic.scene.faults import apply_cover as _apply_cover
from synthetic.scene.faults import blur as _blur
from synthetic.scene.faults import render_away as _render_away

__all__ = [
    "CLASSES",
    "EXTRA_CLASSES",
    "ALL_CLASSES",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "render_frame",
    "generate_dataset",
    "derive_seed",
    "main",
]

CLASSES: tuple[str, ...] = ("normal", "covered", "defocused", "too_dark", "turned_away")
#: faults rendered on request only (``render_frame(label)``, ``generate_dataset(classes=...)``)
EXTRA_CLASSES: tuple[str, ...] = ("dirty_lens",)
#: every label; a label's index here seeds its fault, so adding labels never changes existing frames
ALL_CLASSES: tuple[str, ...] = CLASSES + EXTRA_CLASSES
GENERATOR_NAME = "synthetic.camera_health"
MIN_SIZE = 32
DATASET_NAME = "synthetic-camera-health"

_AA = cv2.LINE_AA
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = float(1 << _SHIFT)


# --------------------------------------------------------------------------
# palettes (RGB)
_TOPS = (
    (30, 30, 32), (235, 235, 230), (120, 120, 125), (35, 45, 85), (170, 35, 35),
    (50, 90, 160), (50, 110, 60), (175, 160, 120), (110, 70, 45), (225, 210, 40),
    (230, 120, 30), (140, 60, 120), (80, 150, 170), (200, 200, 205),
)
_BOTTOMS = (
    (40, 55, 85), (28, 28, 30), (90, 90, 95), (160, 145, 110), (85, 65, 45),
    (55, 70, 110), (60, 60, 55),
)
_HAIR = ((25, 20, 18), (60, 40, 25), (110, 75, 45), (200, 170, 110), (150, 150, 150))
_CARS = (
    (225, 225, 228), (170, 172, 178), (110, 112, 118), (25, 25, 28), (40, 55, 100),
    (150, 25, 25), (45, 95, 170), (40, 75, 50), (190, 175, 145),
)
_CAR_WEIGHTS = (0.22, 0.18, 0.14, 0.18, 0.07, 0.07, 0.06, 0.04, 0.04)
_BUILDING = (
    (165, 160, 150), (190, 180, 160), (150, 85, 65), (210, 205, 195), (95, 110, 125),
    (130, 125, 120), (180, 150, 120),
)


# --------------------------------------------------------------------------
# small helpers


def _tap(x0, y0, x1, y1, w0, w1):
    """Tapered quad from (x0, y0) width w0 to (x1, y1) width w1."""
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    ux, uy = -dy / n * 0.5, dx / n * 0.5
    return (
        (x0 + ux * w0, x1 + ux * w1, x1 - ux * w1, x0 - ux * w0),
        (y0 + uy * w0, y1 + uy * w1, y1 - uy * w1, y0 - uy * w0),
    )


def _mix(a, b, t):
    return [a[i] + (b[i] - a[i]) * t for i in range(3)]


# --------------------------------------------------------------------------
# camera geometry
class _Cam:
    """Pin-hole camera at height ``h`` above the ground plane Y=0, yawed by
    ``yaw`` around the vertical axis. The image horizon is the row ``yh``
    (the tilt is modelled as an off-axis shift, so verticals stay vertical);
    camera roll is applied to the rendered image afterwards."""

    __slots__ = ("W", "H", "f", "h", "yh", "cx", "ca", "sa")

    def __init__(self, W, H, f, h, yh, yaw_deg):
        self.W, self.H, self.f, self.h, self.yh = W, H, f, h, yh
        self.cx = W * 0.5
        a = math.radians(yaw_deg)
        self.ca, self.sa = math.cos(a), math.sin(a)

    def zc(self, X, Z):
        return Z * self.ca - X * self.sa

    def proj(self, X, Y, Z):
        X = np.asarray(X, np.float64)
        Z = np.asarray(Z, np.float64)
        xc = X * self.ca + Z * self.sa
        zc = Z * self.ca - X * self.sa
        inv = 1.0 / np.maximum(zc, 1e-6)
        return self.cx + self.f * xc * inv, self.yh + self.f * (self.h - np.asarray(Y, np.float64)) * inv, zc

    def proj1(self, X: float, Y: float, Z: float):
        """Scalar projection (python floats; much faster than the array version)."""
        zc = Z * self.ca - X * self.sa
        inv = 1.0 / max(zc, 1e-6)
        return self.cx + self.f * (X * self.ca + Z * self.sa) * inv, self.yh + self.f * (self.h - Y) * inv, zc

    def world_from_pixel(self, x, y):
        """Ground point (X, Z) seen at image position (x, y) below the horizon."""
        zc = self.f * self.h / max(y - self.yh, 1e-3)
        xc = (x - self.cx) * zc / self.f
        return xc * self.ca - zc * self.sa, xc * self.sa + zc * self.ca

    def world_from_cam(self, xc, zc):
        return xc * self.ca - zc * self.sa, xc * self.sa + zc * self.ca


def _clip_near(P: np.ndarray, zc: np.ndarray, znear: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a 3-D polygon against the plane zc >= znear."""
    out = []
    n = len(P)
    for i in range(n):
        j = (i + 1) % n
        ina, inb = zc[i] >= znear, zc[j] >= znear
        if ina:
            out.append(P[i])
        if ina != inb:
            t = (znear - zc[i]) / (zc[j] - zc[i])
            out.append(P[i] + t * (P[j] - P[i]))
    return np.array(out) if out else np.zeros((0, 3))


def _draw_world_poly(img, cam: _Cam, P: np.ndarray, col, znear=0.4):
    zc = cam.zc(P[:, 0], P[:, 2])
    if zc.min() < znear:
        P = _clip_near(P, zc, znear)
        if len(P) < 3:
            return
    x, y, _ = cam.proj(P[:, 0], P[:, 1], P[:, 2])
    _poly(img, x, y, col)


# --------------------------------------------------------------------------
# lighting and scene sampling
def _sample_lighting(p: _Params) -> dict:
    tod = p.choice("light_time_of_day", ("day", "overcast", "dusk", "night"), (0.42, 0.22, 0.12, 0.24))
    if tod == "day":
        amb = p.uniform("light_ambient", 0.85, 1.1)
        top = p.color("light_sky_top", (85, 135, 205), 20, 25)
        hor = p.color("light_sky_horizon", (190, 208, 225), 12, 20)
        shadow = p.uniform("light_shadow_strength", 0.35, 0.6)
    elif tod == "overcast":
        amb = p.uniform("light_ambient", 0.7, 0.95)
        top = p.color("light_sky_top", (160, 166, 175), 8, 30)
        hor = p.color("light_sky_horizon", (200, 203, 207), 6, 20)
        shadow = p.uniform("light_shadow_strength", 0.12, 0.25)
    elif tod == "dusk":
        amb = p.uniform("light_ambient", 0.45, 0.7)
        top = p.color("light_sky_top", (60, 70, 120), 15, 15)
        hor = p.color("light_sky_horizon", (230, 155, 105), 20, 20)
        shadow = p.uniform("light_shadow_strength", 0.2, 0.35)
    else:
        amb = p.uniform("light_ambient", 0.22, 0.4)
        top = p.color("light_sky_top", (10, 12, 24), 4, 6)
        hor = p.color("light_sky_horizon", (50, 42, 50), 10, 15)
        shadow = p.uniform("light_shadow_strength", 0.08, 0.15)
    temp = p.uniform("light_colour_temp", -1.0, 1.0)
    tint = p.uniform("light_colour_tint", -1.0, 1.0)
    lamp = p.choice("light_lamp_colour", ((255, 190, 110), (255, 235, 200), (235, 245, 255)), (0.5, 0.3, 0.2))
    if tod == "night":
        temp = round(0.5 * temp + 0.5 * (0.8 if lamp[2] < 150 else 0.0), 4)
    return {"tod": tod, "amb": amb, "top": top, "hor": hor, "shadow": shadow, "temp": temp, "tint": tint,
            "lamp": lamp}


def _sample_osd(p: _Params) -> dict:
    on = p.flag("osd_enabled", 0.65)
    if not on:
        return {"on": 0}
    pos = p.choice("osd_position", ("top_left", "top_right", "bottom_left"), (0.6, 0.2, 0.2))
    text = "%04d-%02d-%02d %02d:%02d:%02d" % (
        p.randint(None, 2016, 2025), p.randint(None, 1, 12), p.randint(None, 1, 28),
        p.randint(None, 0, 23), p.randint(None, 0, 59), p.randint(None, 0, 59),
    )
    cam = "CAM %02d" % p.randint(None, 1, 32)
    p.d["osd_text"] = text
    p.d["osd_camera"] = cam
    return {"on": 1, "pos": pos, "text": text, "cam": cam, "cam_shown": p.flag("osd_camera_shown", 0.6)}


def _draw_osd(img: np.ndarray, osd: dict, W: int, H: int):
    if not osd["on"]:
        return
    s = min(W, H) / 120.0
    scale = 0.42 * s
    th = max(1, int(round(0.8 * s)))
    font = cv2.FONT_HERSHEY_PLAIN
    (tw, tht), _ = cv2.getTextSize(osd["text"], font, scale, th)
    m = int(round(3 * s))
    if osd["pos"] == "top_left":
        org = (m, m + tht)
    elif osd["pos"] == "top_right":
        org = (W - m - tw, m + tht)
    else:
        org = (m, H - m)
    lines = [(osd["text"], org)]
    if osd["cam_shown"]:
        (cw, _), _ = cv2.getTextSize(osd["cam"], font, scale, th)
        y2 = org[1] + tht + m if osd["pos"] != "bottom_left" else org[1] - tht - m
        lines.append((osd["cam"], (org[0] if osd["pos"] != "top_right" else W - m - cw, y2)))
    for t, o in lines:
        cv2.putText(img, t, o, font, scale, (0, 0, 0), th + 1, cv2.LINE_8)
        cv2.putText(img, t, o, font, scale, (235, 235, 235), th, cv2.LINE_8)


# --------------------------------------------------------------------------
# base scene
_GROUND_TYPES = ("road", "parking", "pavement", "plaza", "grass")


def _render_scene(p: _Params, light: dict, W: int, H: int) -> np.ndarray:
    """Elevated surveillance view; returns float32 HxWx3 RGB in [0, 255]."""
    rng = p.rng
    amb = light["amb"]
    night = light["tod"] == "night"
    # ---- camera geometry
    yh = p.uniform("scene_horizon_frac", 0.06, 0.42) * H
    roll = p.uniform("scene_roll_deg", -6.0, 6.0)
    hfov = p.uniform("scene_hfov_deg", 50.0, 85.0)
    f = (W * 0.5) / math.tan(math.radians(hfov * 0.5))
    cam_h = p.uniform("scene_camera_height_m", 3.0, 9.0)
    yaw = p.uniform("scene_yaw_deg", -28.0, 28.0)
    cam = _Cam(W, H, f, cam_h, yh, yaw)
    z_bottom = f * cam_h / (H - yh)  # depth seen at the bottom row

    # ---- ground layout
    gt = p.choice("scene_ground", _GROUND_TYPES, (0.32, 0.18, 0.2, 0.15, 0.15))
    road_x = p.uniform("scene_road_offset_m", -5.0, 5.0)
    road_r = p.uniform("scene_road_half_width_m", 3.2, 7.5)
    if gt in ("road",):
        walk_lo, walk_hi = road_x - road_r - 4.0, road_x + road_r + 4.0
    else:
        walk_lo, walk_hi = -60.0, 60.0

    backdrop = p.choice("scene_backdrop", ("open", "facade"), (0.6, 0.4))
    side = p.choice("scene_side_building", ("none", "left", "right"), (0.45, 0.275, 0.275))
    side_x = 0.0
    if side != "none":
        off = p.uniform("scene_side_building_offset_m", 0.5, 5.0)
        side_x = (walk_lo - off) if side == "left" else (walk_hi + off)
        if gt != "road":
            # put the wall somewhere in view
            xc_edge = (-1 if side == "left" else 1) * (W * 0.5 / f) * z_bottom * p.uniform(None, 1.0, 3.0)
            side_x = cam.world_from_cam(xc_edge, z_bottom * 1.5)[0]
        p.d["scene_side_building_x_m"] = round(side_x, 3)

    # ---- lamp posts
    poles = []
    n_poles = p.randint("scene_num_poles", 0, 4)
    pole_h = p.uniform("scene_pole_height_m", 5.0, 8.0)
    for _ in range(n_poles):
        zc = z_bottom * p.uniform(None, 0.9, 6.0)
        if gt == "road":
            X = road_x + (road_r + 0.6) * (1 if p.u() < 0.5 else -1)
            Z = (zc + X * cam.sa) / cam.ca
        else:
            xc = (p.u() * 2.2 - 1.1) * zc * (W * 0.5 / f)
            X, Z = cam.world_from_cam(xc, zc)
        poles.append([round(X, 3), round(Z, 3)])
    p.d["scene_poles"] = poles

    # ---- ground texture
    y0 = min(H, max(0, int(math.floor(yh)) + 1))
    # planar float canvas (3, H, W): per-channel numpy ops are much faster
    # than broadcasting over an interleaved channel axis
    cp = np.empty((3, H, W), np.float32)
    top, hor = light["top"], light["hor"]
    # sky gradient
    t = np.sqrt(np.linspace(0.0, 1.0, max(y0, 1), dtype=np.float32)[:y0, None])
    for c in range(3):
        cp[c, :y0] = top[c] + (hor[c] - top[c]) * t
    if y0 > 2 and light["tod"] != "night" and p.flag("scene_clouds", 0.6):
        cl = _smooth_noise(rng, 6, 3, W, y0)
        cthr = p.uniform("scene_cloud_threshold", -0.3, 1.0)
        cm = np.clip((cl - cthr) * 0.8, 0.0, 0.85)
        ccol = _shade((235, 235, 238), 1.0 if light["tod"] != "dusk" else 0.8)
        for c in range(3):
            cp[c, :y0] += (ccol[c] - cp[c, :y0]) * cm

    if y0 < H:
        Hg = H - y0
        rows = np.arange(y0, H, dtype=np.float32) + 0.5
        zr = (f * cam_h) / (rows - yh)  # (Hg,)
        xs = (np.arange(W, dtype=np.float32) + 0.5 - cam.cx) / f  # (W,)
        ca, sa = np.float32(cam.ca), np.float32(cam.sa)
        zr2 = zr[:, None]
        xc = xs[None, :] * zr2
        X = xc * ca - zr2 * sa
        Z = xc * sa + zr2 * ca
        g = (zr * zr / (f * cam_h))[:, None]
        a = (zr / f)[:, None]
        fX = abs(cam.ca) * a + g * np.abs(sa - ca * xs)[None, :]
        fZ = abs(cam.sa) * a + g * np.abs(sa * xs + ca)[None, :]

        tex = _gauss_noise(rng, (48, 48))
        tex = cv2.GaussianBlur(tex, (3, 3), 0.7, borderType=cv2.BORDER_REFLECT)
        tex_m = p.uniform("scene_ground_texture_m", 1.5, 4.0)
        k = 48.0 / tex_m
        mx = X * k
        mx -= np.floor(mx * (1 / 48.0)) * 48.0
        my = Z * k
        my -= np.floor(my * (1 / 48.0)) * 48.0
        tv = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)

        asphalt = p.color("scene_asphalt_rgb", (86, 88, 93), 4, 18)
        paving = p.color("scene_paving_rgb", (152, 148, 140), 8, 28)
        grass = p.color("scene_grass_rgb", (72, 104, 50), 10, 15)
        marking = p.choice("scene_marking_rgb", ((225, 225, 220), (230, 190, 60)), (0.75, 0.25))
        lines = []  # (coverage, colour or None for darken, strength)

        if gt == "road":
            d = np.abs(X - road_x)
            side_m = np.clip((d - road_r) / fX + 0.5, 0.0, 1.0)
            base0, base1, amp0, amp1 = asphalt, paving, 0.16, 0.08
            tile = p.uniform("scene_tile_m", 0.4, 0.8)
            gl = np.maximum(_cov(_pdist(X, tile), 0.04, fX), _cov(_pdist(Z, tile), 0.04, fZ))
            lines.append((gl * side_m, None, 0.35))
            lines.append((_cov(np.abs(d - road_r), 0.2, fX), None, -0.45))
            dash = p.flag("scene_centre_dashed", 0.7)
            c = _cov(d, 0.14, fX)
            if dash:
                c *= _cov(_pdist(Z, 9.0), 3.0, fZ)
            lines.append((c, marking, 0.9))
            if p.flag("scene_lane_edges", 0.5):
                lines.append((_cov(np.abs(d - road_r + 0.35), 0.12, fX), (225, 225, 222), 0.9))
            if p.flag("scene_crosswalk", 0.35):
                zc0 = z_bottom * p.uniform("scene_crosswalk_depth", 1.1, 3.0)
                zcw = (zc0 + road_x * cam.sa) / cam.ca
                c = _cov(_pdist(X, 1.0, road_x), 0.5, fX) * _cov(np.abs(Z - zcw), 3.0, fZ) * (1.0 - side_m)
                lines.append((c, (225, 225, 222), 0.9))
        elif gt == "parking":
            side_m = None
            base0, amp0 = asphalt, 0.16
            z0 = p.uniform("scene_parking_offset_m", 0.0, 12.0)
            # double rows of 5 m stalls around a centre line every 13 m
            dz = _pdist(Z, 13.0, z0)
            c = np.maximum(_cov(_pdist(X, 2.6, road_x), 0.12, fX) * _cov(dz, 10.0, fZ), _cov(dz, 0.12, fZ))
            lines.append((c, (225, 225, 222), 0.85))
        elif gt == "pavement":
            side_m = None
            base0, amp0 = paving, 0.08
            tile = p.uniform("scene_tile_m", 0.3, 0.7)
            gl = np.maximum(_cov(_pdist(X, tile), 0.03, fX), _cov(_pdist(Z, tile), 0.03, fZ))
            lines.append((gl, None, p.uniform("scene_grout_strength", 0.15, 0.4)))
        elif gt == "plaza":
            slab = p.uniform("scene_tile_m", 1.2, 3.0)
            par = (np.floor(X * (1.0 / slab)) + np.floor(Z * (1.0 / slab))) % 2.0
            # fade the checker out where slabs become sub-pixel
            par *= np.clip(2.0 - 2.0 * np.maximum(fX, fZ) / slab * 4.0, 0.0, 1.0)
            par = par * 0.7 + 0.15 * (1.0 - np.clip(2.0 - 8.0 * np.maximum(fX, fZ) / slab, 0.0, 1.0))
            side_m = par
            base0 = paving
            base1 = p.color("scene_plaza_alt_rgb", (125, 110, 100), 15, 20)
            amp0 = amp1 = 0.06
            gl = np.maximum(_cov(_pdist(X, slab), 0.05, fX), _cov(_pdist(Z, slab), 0.05, fZ))
            lines.append((gl, None, 0.3))
        else:  # grass with a path
            px_ = p.uniform("scene_path_offset_m", -4.0, 4.0)
            pw = p.uniform("scene_path_half_width_m", 0.8, 2.5)
            d = np.abs(X - px_)
            side_m = np.clip((pw - d) / fX + 0.5, 0.0, 1.0)
            base0, base1, amp0, amp1 = grass, paving, 0.35, 0.08
            if p.flag("scene_mowing_stripes", 0.5):
                sw = p.uniform("scene_mowing_width_m", 1.0, 2.0)
                c = _cov(_pdist(X, 2 * sw), sw, fX) * (1.0 - side_m)
                lines.append((c, None, -0.12))

        # single-channel shading: texture, stains, grout, ambient light, haze
        if side_m is None:
            shade = amp0 * tv
        else:
            shade = (amp0 + (amp1 - amp0) * side_m) * tv
        stain = _smooth_noise(rng, 5, 3, W, Hg)
        shade += p.uniform("scene_stain_amp", 0.03, 0.12) * stain
        shade += 1.0
        paint: dict = {}
        for cov_, col, strength in lines:
            if col is None:
                shade *= 1.0 - strength * cov_
            else:
                c = cov_ * strength if strength != 1.0 else cov_
                key = tuple(col)
                paint[key] = np.maximum(paint[key], c) if key in paint else c
        zfog = p.uniform("scene_haze_m", 40.0, 200.0)
        fw = (1.0 - np.exp(-zr / zfog))[:, None]
        if night and poles:
            light_map = np.full((Hg, W), amb, np.float32)
            for X0, Z0 in poles:
                r2 = (X - X0) ** 2 + (Z - Z0) ** 2
                light_map += 0.45 * np.exp(r2 * (-1.0 / (2 * 3.5 ** 2)))
            light_map *= 1.0 - fw
        else:
            light_map = amb * (1.0 - fw)
        shade *= light_map
        sm = shade * side_m if side_m is not None else None
        paint = [(col, 1.0 - c, c * shade) for col, c in paint.items()]
        for ch in range(3):
            gc = cp[ch, y0:]
            np.multiply(shade, base0[ch], out=gc)
            if sm is not None:
                gc += sm * (base1[ch] - base0[ch])
            for col, inv, cs in paint:
                gc *= inv
                gc += cs * col[ch]
            gc += fw * hor[ch]

    # ---- objects: sample (vehicles first, people avoid them)
    cars = []
    n_cars = {"road": p.randint(None, 0, 4), "parking": p.randint(None, 2, 8)}.get(gt, p.randint(None, 0, 1))
    for _ in range(n_cars):
        zc = z_bottom * (0.85 + 5.0 * p.u() ** 1.5)
        kind = p.randint(None, 0, 2)
        colour = p.choice(None, range(len(_CARS)), _CAR_WEIGHTS)
        if gt == "road":
            lane = road_x + (road_r * 0.5) * (1 if p.u() < 0.5 else -1)
            Z = (zc + lane * cam.sa) / cam.ca
            X, ang = lane, p.uniform(None, -3.0, 3.0)
        elif gt == "parking":
            xc = (p.u() * 2.2 - 1.1) * zc * (W * 0.5 / f)
            X, Z = cam.world_from_cam(xc, zc)
            z0 = p.d["scene_parking_offset_m"]
            X = math.floor((X - road_x) / 2.6) * 2.6 + road_x + 1.3  # stall centre
            Z = round((Z - z0) / 13.0) * 13.0 + z0 + (2.6 if p.u() < 0.5 else -2.6)
            ang = (0.0 if p.u() < 0.5 else 180.0) + p.uniform(None, -3.0, 3.0)
        else:
            xc = (p.u() * 2.0 - 1.0) * zc * (W * 0.5 / f)
            X, Z = cam.world_from_cam(xc, zc)
            ang = p.uniform(None, 0.0, 180.0)
        if any(abs(X - q[0]) < 2.3 and abs(Z - q[1]) < 5.0 for q in cars):
            continue  # keep vehicles from overlapping
        if side != "none" and (X - side_x) * (-1 if side == "left" else 1) > -1.5:
            continue
        cars.append([round(X, 3), round(Z, 3), ang, kind, colour])
    p.d["scene_cars_fields"] = ["x_m", "z_m", "heading_deg", "body", "colour"]
    p.d["scene_cars"] = cars

    people = []
    n_people = p.randint("scene_num_people", 1, 9 if gt != "parking" else 5)
    for _ in range(n_people):
        fy = yh + (H - yh) * (0.04 + 1.06 * p.u() ** 0.8)
        fx = W * (p.u() * 1.1 - 0.05)
        Xp, Zp = cam.world_from_pixel(fx, fy)
        Xp = min(max(Xp, walk_lo + 0.3), walk_hi - 0.3)
        if side == "left":
            Xp = max(Xp, side_x + 0.5)
        elif side == "right":
            Xp = min(Xp, side_x - 0.5)
        row = [
            round(Xp, 3), round(Zp, 3), p.uniform(None, 1.5, 1.92), p.uniform(None, -1.0, 1.0),
            p.randint(None, 0, len(_TOPS) - 1), p.randint(None, 0, len(_BOTTOMS) - 1),
            p.randint(None, 0, len(_SKIN) - 1), p.randint(None, 0, len(_HAIR) - 1),
            p.flag(None, 0.3), p.flag(None, 0.35),
        ]
        if any(abs(Xp - q[0]) < 1.6 and abs(Zp - q[1]) < 3.0 for q in cars):
            continue  # not inside a vehicle
        people.append(row)
    p.d["scene_people_fields"] = ["x_m", "z_m", "height_m", "stride", "top", "bottom", "skin", "hair",
                                  "long_coat", "side_view"]
    p.d["scene_people"] = people

    trees = []
    if gt in ("grass", "plaza", "pavement") or p.u() < 0.3:
        for _ in range(p.randint(None, 0, 3)):
            zc = z_bottom * p.uniform(None, 1.2, 6.0)
            xc = (p.u() * 2.4 - 1.2) * zc * (W * 0.5 / f)
            X, Z = cam.world_from_cam(xc, zc)
            trees.append([round(X, 3), round(Z, 3), p.uniform(None, 4.0, 9.0), p.uniform(None, 0.0, 1.0)])
    p.d["scene_trees"] = trees

    # ---- shadows on the ground (before objects)
    sh_strength = light["shadow"]
    sdx = p.uniform("light_shadow_dx", -0.6, 0.6)
    mask = np.zeros((H, W), np.uint8)
    for X, Z, hm, *_ in people:
        x, y, zc = cam.proj1(X, 0.0, Z)
        hp = f * hm / zc
        _ellipse(mask, float(x) + sdx * hp * 0.25, float(y), hp * (0.16 + abs(sdx) * 0.25), hp * 0.05, 255)
    for X, Z, ang, kind, _ in cars:
        L, Wd = _CAR_DIMS[kind][:2]
        c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
        hw, hl = Wd * 0.5 + 0.2, L * 0.5 + 0.2
        q = [cam.proj1(X + a * c + b * s, 0.0, Z - a * s + b * c)
             for a, b in ((-hw, -hl), (hw, -hl), (hw, hl), (-hw, hl))]
        if min(t[2] for t in q) > 0.5:
            _poly(mask, [t[0] + sdx * 2.0 for t in q], [t[1] for t in q], 255)
    rows_any = np.flatnonzero(mask.any(axis=1))
    if len(rows_any):
        r0, r1 = max(0, rows_any[0] - 2), min(H, rows_any[-1] + 3)
        m = cv2.GaussianBlur(mask[r0:r1], (3, 3), 0.8).astype(np.float32)
        m *= -sh_strength / 255.0
        m += 1.0
        cp[:, r0:r1] *= m
    img = cv2.convertScaleAbs(cv2.merge(list(cp)))

    # ---- backdrop: skyline / trees at the horizon, or a facade across the view
    glows = []
    if backdrop == "open":
        skyline = []
        for _ in range(p.randint("scene_num_skyline", 0, 7)):
            row = [p.uniform(None, -0.1, 1.1), p.uniform(None, 0.05, 0.3), p.uniform(None, 0.04, 0.35),
                   p.randint(None, 0, len(_BUILDING) - 1), p.uniform(None, 0.2, 0.55)]
            skyline.append(row)
            bx, bw, bh = W * row[0], W * row[1], H * row[2]
            bc = _mix(_BUILDING[row[3]], light["hor"], row[4])
            col = _shade(bc, amb if not night else 0.35)
            x0, x1, yt = bx - bw / 2, bx + bw / 2, yh - bh
            _poly(img, (x0, x1, x1, x0), (yt, yt, yh + 0.6, yh + 0.6), col)
            sx = max(2.0, bw / max(2, int(bw / (3.0 * H / 120.0))))
            sy = 3.2 * H / 120.0
            nxw, nyw = int(bw / sx), int(bh / sy) - 1
            if nxw > 0 and nyw > 0:
                # window grid = dark floor bands crossed by wall-coloured pillars
                wx = x0 + sx * (np.arange(nxw) + 0.3)
                wy = yt + sy * (np.arange(nyw) + 0.5)
                ww, wh = sx * 0.45, sy * 0.45
                z = np.zeros(nyw)
                bands = _pts(np.stack([z + wx[0], z + wx[-1] + ww, z + wx[-1] + ww, z + wx[0]], 1),
                             np.stack([wy, wy, wy + wh, wy + wh], 1))
                cv2.fillPoly(img, list(bands), _shade(col, 0.6 if night else 0.7), _AA, _SHIFT)
                if nxw > 1:
                    g0, g1 = wx[:-1] + ww, wx[1:]
                    z = np.zeros(nxw - 1)
                    pil = _pts(np.stack([g0, g1, g1, g0], 1),
                               np.stack([z + wy[0] - 1, z + wy[0] - 1, z + wy[-1] + wh + 1, z + wy[-1] + wh + 1], 1))
                    cv2.fillPoly(img, list(pil), col, _AA, _SHIFT)
                if night:
                    lit = np.flatnonzero(rng.random(nxw * nyw) < 0.3)
                    if len(lit):
                        gx, gy = wx[lit % nxw], wy[lit // nxw]
                        P = _pts(np.stack([gx, gx + ww, gx + ww, gx], 1), np.stack([gy, gy, gy + wh, gy + wh], 1))
                        cv2.fillPoly(img, list(P), (210, 180, 110), _AA, _SHIFT)
        p.d["scene_skyline_fields"] = ["x_frac", "width_frac", "height_frac", "colour", "haze"]
        p.d["scene_skyline"] = skyline
        if p.flag("scene_tree_line", 0.45):
            n = int(W / (4.0 * H / 120.0))
            tx = np.linspace(-2, W + 2, n) + rng.random(n) * 3
            tr = (1.5 + rng.random(n) * 3.5) * H / 120.0
            tc = _shade(_mix((50, 75, 40), light["hor"], 0.35), amb)
            # bumpy silhouette of a distant tree line as one polygon
            xx = np.linspace(-2.0, W + 2.0, 4 * n)
            yy = yh - np.interp(xx, tx, tr) * (1.0 + 0.35 * np.abs(np.sin(xx * 1.7))) * 1.3
            P = _pts(np.concatenate([xx, [W + 2.0, -2.0]]), np.concatenate([yy, [yh + 0.6, yh + 0.6]]))
            cv2.fillPoly(img, [P], tc, _AA, _SHIFT)
    else:
        zf = z_bottom * p.uniform("scene_facade_depth", 3.0, 12.0)
        hf = p.uniform("scene_facade_height_m", 8.0, 40.0)
        fcol = _BUILDING[p.randint("scene_facade_colour", 0, len(_BUILDING) - 1)]
        fcol = _shade(_mix(fcol, light["hor"], 0.15), amb)
        xc_span = zf * (W * 0.5 / f) * 1.4
        Pxa, Pza = cam.world_from_cam(-xc_span, zf)
        Pxb, Pzb = cam.world_from_cam(xc_span, zf)
        # facade plane perpendicular to the road direction (world Z = const)
        Zf = (Pza + Pzb) * 0.5
        Xa, Xb = min(Pxa, Pxb) - 20, max(Pxa, Pxb) + 20
        P = np.array([[Xa, 0, Zf], [Xb, 0, Zf], [Xb, hf, Zf], [Xa, hf, Zf]], np.float64)
        _draw_world_poly(img, cam, P, fcol)
        # ground floor band and windows
        _draw_world_poly(img, cam, np.array([[Xa, 0, Zf], [Xb, 0, Zf], [Xb, 3.2, Zf], [Xa, 3.2, Zf]]),
                         _shade(fcol, 0.75))
        fl = p.uniform("scene_facade_floor_m", 3.0, 3.8)
        wsp = p.uniform("scene_facade_window_spacing_m", 2.0, 4.0)
        wfr = p.uniform("scene_facade_window_frac", 0.35, 0.75)
        nfl = int((hf - 3.5) / fl)
        x_lo = math.floor(Xa / wsp) * wsp
        nx = int((Xb - x_lo) / wsp)
        if nfl > 0 and nx > 1:
            # window grid = dark floor bands crossed by wall-coloured pillars;
            # on a plane of constant Z the image x of a column does not depend on Y
            ww, wh = wsp * wfr, fl * 0.5
            cols = x_lo + wsp * np.arange(nx)
            xa, _, za = cam.proj(cols, 0.0, np.full(nx, Zf))
            xb, _, zb = cam.proj(cols + ww, 0.0, np.full(nx, Zf))
            vis = (za > 0.5) & (zb > 0.5) & (np.maximum(xa, xb) > -2) & (np.minimum(xa, xb) < W + 2)
            cols = cols[vis]
            gy = 3.8 + fl * np.arange(nfl)
            if len(cols):
                wcol = _shade(fcol, 0.45) if night else _shade(_mix(fcol, (70, 85, 100), 0.6), 0.9)
                c0, c1 = cols[0], cols[-1] + ww
                for yb_ in gy.tolist():
                    _draw_world_poly(img, cam, np.array([[c0, yb_, Zf], [c1, yb_, Zf], [c1, yb_ + wh, Zf],
                                                         [c0, yb_ + wh, Zf]]), wcol)
                if len(cols) > 1:
                    g0, g1 = cols[:-1] + ww, cols[1:]
                    n = len(g0)
                    y0_, y1_ = np.full(n, gy[0] - 0.1), np.full(n, gy[-1] + wh + 0.1)
                    X4 = np.stack([g0, g1, g1, g0], 1)
                    x, y, _ = cam.proj(X4, np.stack([y0_, y0_, y1_, y1_], 1), np.full_like(X4, Zf))
                    cv2.fillPoly(img, list(_pts(x, y)), fcol, _AA, _SHIFT)
                if night:
                    lit = np.flatnonzero(rng.random(len(cols) * nfl) < 0.25)
                    if len(lit):
                        gx, gyy = cols[lit % len(cols)], gy[lit // len(cols)]
                        X4 = np.stack([gx, gx + ww, gx + ww, gx], 1)
                        Y4 = np.stack([gyy, gyy, gyy + wh, gyy + wh], 1)
                        x, y, _ = cam.proj(X4, Y4, np.full_like(X4, Zf))
                        cv2.fillPoly(img, list(_pts(x, y)), (210, 185, 120), _AA, _SHIFT)

    # ---- side building (wall along the road, receding to the vanishing point)
    if side != "none":
        sgn = -1.0 if side == "left" else 1.0
        hb = p.uniform("scene_side_building_height_m", 4.0, 16.0)
        depth = 8.0
        z1 = p.uniform("scene_side_building_start_m", -10.0, 10.0)
        z2 = z1 + p.uniform("scene_side_building_length_m", 10.0, 60.0)
        wcol = _BUILDING[p.randint("scene_side_building_colour", 0, len(_BUILDING) - 1)]
        lit_k = 0.75 if sgn * cam.sa >= 0 else 0.95
        wc = _shade(wcol, amb * lit_k)
        P = np.array([[side_x, 0, z1], [side_x, 0, z2], [side_x, hb, z2], [side_x, hb, z1]], np.float64)
        _draw_world_poly(img, cam, P, wc)
        # end face towards the camera
        xe = side_x + sgn * depth
        P = np.array([[side_x, 0, z1], [xe, 0, z1], [xe, hb, z1], [side_x, hb, z1]], np.float64)
        if cam.zc(side_x, z1) > 0.5:
            _draw_world_poly(img, cam, P, _shade(wcol, amb * 0.6))
        fl = 3.2
        nfl = max(0, int((hb - 1.0) / fl))
        wsp = p.uniform("scene_side_window_spacing_m", 2.0, 3.5)
        nz = int((z2 - z1 - 1.0) / wsp)
        if nfl and nz:
            gz = np.tile(z1 + 0.8 + wsp * np.arange(nz), nfl)
            gy = np.repeat(1.0 + fl * np.arange(nfl), nz)
            Z4 = np.stack([gz, gz + wsp * 0.5, gz + wsp * 0.5, gz], 1)
            Y4 = np.stack([gy, gy, gy + 1.5, gy + 1.5], 1)
            x, y, zc = cam.proj(np.full_like(Z4, side_x), Y4, Z4)
            ok = zc.min(1) > 0.6
            P = _pts(x[ok], y[ok])
            if len(P):
                wcol2 = (210, 185, 120) if night else _shade(_mix(wcol, (60, 75, 90), 0.65), amb)
                cv2.fillPoly(img, list(P), wcol2 if not night else _shade(wc, 0.5), _AA, _SHIFT)
                if night:
                    lit = rng.random(len(P)) < 0.3
                    if lit.any():
                        cv2.fillPoly(img, list(P[lit]), wcol2, _AA, _SHIFT)

    # ---- depth-sorted objects
    objs = []
    for o in people:
        objs.append((cam.zc(o[0], o[1]), 0, o))
    for o in cars:
        objs.append((cam.zc(o[0], o[1]), 1, o))
    for o in poles:
        objs.append((cam.zc(o[0], o[1]), 2, o))
    for o in trees:
        objs.append((cam.zc(o[0], o[1]), 3, o))
    objs.sort(key=lambda t: -t[0])
    for zc, kind, o in objs:
        if zc < 0.6:
            continue
        if kind == 0:
            _draw_person(img, cam, o, amb)
        elif kind == 1:
            _draw_car(img, cam, o, amb)
        elif kind == 2:
            g = _draw_pole(img, cam, o, pole_h, amb, light, night)
            if g:
                glows.append(g)
        else:
            _draw_tree(img, cam, o, amb)

    if glows:
        gl = np.zeros((H, W), np.uint8)
        for x, y, r in glows:
            _circle(gl, x, y, r, 255)
        gl = cv2.GaussianBlur(gl, (0, 0), max(1.0, 2.0 * H / 120.0))
        img = cv2.add(img, cv2.merge([cv2.convertScaleAbs(gl, alpha=0.8 * c / 255.0) for c in light["lamp"]]))
    # camera roll: rotate about the centre, scaled so no border shows
    if abs(roll) > 0.05:
        img = _rotate(img, roll)
    return img.astype(np.float32)


def _rotate(img: np.ndarray, deg: float) -> np.ndarray:
    H, W = img.shape[:2]
    ar = math.radians(abs(deg))
    sc = math.cos(ar) + math.sin(ar) * max(W / H, H / W)
    M = cv2.getRotationMatrix2D((W * 0.5, H * 0.5), deg, sc)
    return cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _draw_person(img, cam: _Cam, o, amb):
    X, Z, hm, stride, ti, bi, si, hi, coat, sideview = o
    fx, fy, zc = cam.proj1(X, 0.0, Z)
    h = cam.f * hm / zc
    if h < 2.0:
        return
    top = _shade(_TOPS[ti], amb)
    bot = _shade(_BOTTOMS[bi], amb)
    skin = _shade(_SKIN[si], amb)
    hair = _shade(_HAIR[hi], amb)
    wk = 0.62 if sideview else 1.0
    hip = fy - 0.48 * h
    sho = fy - 0.81 * h
    st = stride * (0.11 if sideview else 0.05) * h
    # legs
    lw = 0.085 * h
    for sgn in (-1.0, 1.0):
        x0 = fx + sgn * 0.045 * h * wk
        xs_, ys_ = _tap(x0, hip, x0 + sgn * st, fy, lw, lw * 0.75)
        _poly(img, xs_, ys_, bot)
        if h > 12.0:  # shoes
            _line(img, x0 + sgn * st - 0.01 * h, fy - 0.01 * h,
                  x0 + sgn * st + 0.04 * h * sgn * (1 if sideview else 0.3), fy - 0.01 * h, _shade(bot, 0.4),
                  0.04 * h)
    # torso (optionally a long coat)
    lo = hip + (0.17 * h if coat else 0.03 * h)
    _poly(img, (fx - 0.125 * h * wk, fx + 0.125 * h * wk, fx + 0.105 * h * wk * (1.2 if coat else 1.0),
                fx - 0.105 * h * wk * (1.2 if coat else 1.0)),
          (sho, sho, lo, lo), top)
    # arms
    aw = 0.06 * h
    arm_col = _shade(top, 0.85)
    for sgn in (-1.0, 1.0):
        x0 = fx + sgn * 0.115 * h * wk
        sw = -sgn * st * 0.8 if sideview else sgn * 0.02 * h
        _poly(img, *_tap(x0, sho + 0.02 * h, x0 + sw, fy - 0.46 * h, aw, aw * 0.8), arm_col)
        if h > 12.0:  # hands
            _circle(img, x0 + sw, fy - 0.45 * h, aw * 0.45, skin)
    # head and hair
    hr = 0.065 * h
    hy = fy - 0.895 * h
    _circle(img, fx, hy, hr, skin)
    _ellipse(img, fx, hy - hr * 0.15, hr * 1.02, hr * 0.95, hair, 180, 360)


_CAR_DIMS = (  # length, width, body top, cabin length frac, cabin top, cabin offset
    (4.4, 1.80, 0.95, 0.50, 1.45, -0.05),
    (4.0, 1.75, 0.95, 0.62, 1.50, -0.12),
    (4.7, 1.95, 1.10, 0.62, 1.80, -0.05),
)


def _box_faces(img, cam: _Cam, X, Z, c, s, L, Wd, yb, yt, zoff, side_col, top_col, end_col, hull_col):
    """Draw an oriented 3-D box standing on the ground (visible faces only)."""
    hw, hl = Wd * 0.5, L * 0.5
    P = []
    for fx_, fz_ in ((-hw, -hl + zoff), (hw, -hl + zoff), (hw, hl + zoff), (-hw, hl + zoff)):
        P.append((X + fx_ * c + fz_ * s, Z - fx_ * s + fz_ * c))
    bot, tp = [], []
    for Px, Pz in P:
        xb, yb_, zc = cam.proj1(Px, yb, Pz)
        if zc < 0.5:
            return False
        xt, yt_, _ = cam.proj1(Px, yt, Pz)
        bot.append((xb, yb_))
        tp.append((xt, yt_))
    allp = np.array([(round(a * _ONE), round(b * _ONE)) for a, b in bot + tp], np.int32)
    cv2.fillConvexPoly(img, cv2.convexHull(allp), hull_col, _AA, _SHIFT)
    ox, oz = X + zoff * s, Z + zoff * c  # box centre
    for i in range(4):
        j = (i + 1) % 4
        mx, mz = (P[i][0] + P[j][0]) * 0.5, (P[i][1] + P[j][1]) * 0.5
        # visible if the camera (world origin) lies on the outer side of the face
        if (mx - ox) * (0.0 - mx) + (mz - oz) * (0.0 - mz) <= 0:
            continue
        col = side_col if (i % 2 == 1) else end_col
        _poly(img, (bot[i][0], bot[j][0], tp[j][0], tp[i][0]), (bot[i][1], bot[j][1], tp[j][1], tp[i][1]), col)
    _poly(img, [q[0] for q in tp], [q[1] for q in tp], top_col)
    return True


def _draw_car(img, cam: _Cam, o, amb):
    X, Z, ang, kind, ci = o
    L, Wd, bt, cl, ct, co = _CAR_DIMS[kind]
    col = _CARS[ci]
    a = math.radians(ang)
    c, s = math.cos(a), math.sin(a)
    # wheels first: the body hides their upper half
    wr = 0.32
    tyre = _shade((22, 22, 24), amb)
    wheels = []
    for wx, wz in ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)):
        wx *= Wd * 0.5 - 0.05
        wz *= L * 0.32
        x, y, zc = cam.proj1(X + wx * c + wz * s, wr, Z - wx * s + wz * c)
        if zc < 0.6:
            return
        wheels.append((x, y, cam.f * wr / zc))
    for x, y, r in wheels:
        _ellipse(img, x, y, r * 0.8, r, tyre)
    body = _shade(col, amb)
    if not _box_faces(img, cam, X, Z, c, s, L, Wd, 0.25, bt, 0.0,
                      _shade(body, 0.8), _shade(body, 1.05), _shade(body, 0.9), _shade(body, 0.55)):
        return
    glass = _shade((55, 65, 80), amb)
    _box_faces(img, cam, X, Z, c, s, L * cl, Wd * 0.88, bt, ct, L * co,
               glass, _shade(body, 0.95), _shade(glass, 1.25), _shade(glass, 0.8))


def _draw_pole(img, cam: _Cam, o, ph, amb, light, night):
    X, Z = o
    xb, yb, zc = cam.proj1(X, 0.0, Z)
    xt, yt, _ = cam.proj1(X, ph, Z)
    w = cam.f * 0.14 / float(zc)
    col = _shade((70, 72, 75), amb)
    _line(img, float(xb), float(yb), float(xt), float(yt), col, w)
    xa, ya, _ = cam.proj1(X + 1.2 * (1 if X < 0 else -1), ph, Z)
    _line(img, float(xt), float(yt), float(xa), float(ya), col, w * 0.7)
    r = max(0.6, cam.f * 0.18 / float(zc))
    _ellipse(img, float(xa), float(ya) + r * 0.3, r * 1.4, r * 0.6,
             light["lamp"] if night else _shade((200, 200, 195), amb))
    if night:
        return (float(xa), float(ya) + r, max(1.0, 2.5 * r))
    return None


def _draw_tree(img, cam: _Cam, o, amb):
    X, Z, th, v = o
    xb, yb, zc = cam.proj1(X, 0.0, Z)
    xt, yt, _ = cam.proj1(X, th * 0.55, Z)
    s = cam.f / float(zc)
    _line(img, float(xb), float(yb), float(xt), float(yt), _shade((80, 60, 45), amb), 0.25 * s)
    base = (45 + 30 * v, 85 + 25 * v, 40)
    r = th * 0.28 * s
    cx, cy = float(xt), float(yt) - r * 0.6
    blobs = ((-0.45, 0.25, 0.7, 0.8), (0.45, 0.2, 0.8, 0.8), (0.0, -0.3, 1.0, 0.9), (0.1, 0.15, 0.9, 0.85))
    for dx, dy, k, rr in blobs:
        _circle(img, cx + dx * r, cy + dy * r, rr * r, _shade(base, amb * k))


# --------------------------------------------------------------------------
# optics and sensor


def _sensor(p: _Params, img: np.ndarray, light: dict, W: int, H: int, *, exposure: float, gain: float,
            ir: bool = False, chroma_noise: float = 0.0) -> np.ndarray:
    """Exposure, white balance, vignetting, noise and ISP; returns uint8 RGB.

    ``img`` is the float32 HxWx3 scene radiance in display units (0..255).
    In ``ir`` mode the frame is processed as one greyscale channel.
    """
    rng = p.rng
    u = min(W, H) / 120.0
    _, _, r2, _, _, _, _ = _grids(W, H)
    vig = p.uniform("cam_vignetting", 0.4, 0.85) if ir else p.uniform("cam_vignetting", 0.05, 0.35)
    v = 1.0 - vig * r2
    if ir:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img *= v * exposure
        shape = (H, W)
    else:
        wb = p.uniform("cam_wb_error", 0.0, 1.0)
        temp, tint = light["temp"] * wb, light["tint"] * wb
        gains = (1.0 + 0.16 * temp, 1.0 + 0.06 * tint, 1.0 - 0.16 * temp)
        img = img * cv2.merge([v * (g * exposure) for g in gains])
        shape = (H, W, 3)
    # sensor noise: read + shot noise, amplified by the gain
    read = p.uniform("cam_read_noise", 0.8, 3.0) * math.sqrt(gain)
    shot = p.uniform("cam_shot_noise", 0.15, 0.5) * math.sqrt(gain)
    sig = np.maximum(img, 0.0)
    sig *= shot * shot
    sig += read * read
    np.sqrt(sig, out=sig)
    sig *= _gauss_noise(rng, shape)
    img += sig
    if chroma_noise > 0 and not ir:
        cn = _gauss_noise(rng, (max(2, H // 4), max(2, W // 4), 3))
        cn = cv2.resize(cn, (W, H), interpolation=cv2.INTER_LINEAR)
        img += cn * (chroma_noise * read)
    # ISP: softness / sharpening, chroma subsampling, black level and gamma
    soft = p.uniform("cam_isp_softness", 0.35, 0.85) * u
    k = 3 if soft < 0.7 else 5
    img = cv2.GaussianBlur(img, (k, k), soft)
    if p.flag("cam_sharpen", 0.35):
        amt = p.uniform("cam_sharpen_amount", 0.2, 0.7)
        kk = 2 * int(math.ceil(2.0 * u)) + 1
        bl = cv2.GaussianBlur(img, (kk, kk), 1.2 * u)
        img = cv2.addWeighted(img, 1.0 + amt, bl, -amt, 0.0)
    if not ir and p.flag("cam_chroma_subsampling", 0.7):
        # 4:2:0-like chroma: low-resolution colour, full-resolution luma
        b = cv2.resize(cv2.resize(img, (W // 2, H // 2), interpolation=cv2.INTER_AREA), (W, H),
                       interpolation=cv2.INTER_LINEAR)
        d = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) - cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        img = b + cv2.merge([d, d, d])
    out = cv2.convertScaleAbs(img)
    if ir:
        out = cv2.merge([out, out, out])
    black = p.uniform("cam_black_level", 0.0, 6.0)
    gamma = p.uniform("cam_gamma", 0.85, 1.15)
    lut = np.clip(255.0 * (np.minimum(np.arange(256) + black, 255.0) / 255.0) ** gamma + 0.5, 0, 255)
    return cv2.LUT(out, lut.astype(np.uint8))


# --------------------------------------------------------------------------
# public API
def _check_size(size) -> tuple[int, int]:
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size)
    )
    if not ok or int(size[0]) <= 0 or int(size[1]) <= 0:
        raise ValueError(f"size must be two positive ints (width, height), got {size!r}")
    W, H = int(size[0]), int(size[1])
    if min(W, H) < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} px in both dimensions, got {W}x{H}")
    return W, H


def _check_seed(seed, name="seed") -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or int(seed) < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_label(label) -> int:
    if label not in ALL_CLASSES:
        raise ValueError(f"label must be one of {ALL_CLASSES}, got {label!r}")
    return ALL_CLASSES.index(label)


def _check_classes(classes) -> tuple[str, ...]:
    if classes is None:
        return CLASSES
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError(f"classes must be a non-empty list of labels from {ALL_CLASSES}, got {classes!r}")
    for c in classes:
        if c not in ALL_CLASSES:
            raise ValueError(f"classes has unknown label {c!r}; known: {ALL_CLASSES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must not repeat a label, got {list(classes)!r}")
    return tuple(classes)


def derive_seed(seed: int, class_index: int, image_index: int) -> int:
    """Per-image seed derived from the dataset seed (53 bits, JSON-safe)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(class_index), int(image_index)))
    a, b = ss.generate_state(2, np.uint32).tolist()
    return ((a << 32) | b) & ((1 << 53) - 1)


BASES = ("procedural", "engine")


def _engine_scene(seed: int, W: int, H: int, params: dict) -> np.ndarray:
    """The base view from the 3-D scene engine (``synthetic.scene``): a calibrated camera over a
    world with people and vehicles; the engine's own sensor effects are off (this module's sensor
    model applies them). Returns float32 HxWx3 in [0, 255]."""
    from synthetic.scene import Scene, SceneConfig

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    surface = str(rng.choice(["road", "pavement", "grass", "platform", "indoor"], p=[0.4, 0.25, 0.1, 0.1, 0.15]))
    cfg = SceneConfig(seed=int(seed % (1 << 31)), cameras=1, resolution=(W, H), duration=1, fps=5.0,
                      surface=surface, crowd_density=round(float(rng.uniform(0.3, 8.0)), 3),
                      num_vehicles=int(rng.integers(0, 6)) if surface == "road" else 0,
                      randomization={"jpeg_prob": 0.0, "noise_sigma": [0.0, 0.0], "defocus_prob": 0.0,
                                     "motion_blur_prob": 0.0, "exposure_prob": 0.0})
    frame = next(Scene(cfg).frames(with_mask=False))
    params["engine_surface"] = surface
    params["engine_crowd_density"] = cfg.crowd_density
    params["engine_num_vehicles"] = cfg.num_vehicles
    params["engine_people_visible"] = sum(o["category"] == "person" and o["visible_fraction"] > 0 for o in frame.objects)
    params["engine_time_of_day"] = frame.params.get("time_of_day")
    params["engine_camera"] = frame.params.get("calibration")
    return frame.image.astype(np.float32)


def render_frame(label: str, seed: int, size: tuple[int, int] = (160, 120),
                 base: str = "procedural") -> tuple[np.ndarray, dict]:
    """Render one frame of class ``label`` (one of :data:`ALL_CLASSES`).

    ``base`` chooses the healthy view the camera fault is applied to: ``procedural`` (this
    module's fast 2-D perspective drawing) or ``engine`` (the 3-D scene engine, slower, richer).

    Returns an HxWx3 uint8 RGB frame and the dict of every randomized
    parameter (JSON-serialisable: floats, ints, strs and lists). The same
    (label, seed, size) always gives the same frame. The base scene and
    on-screen display depend on the seed only, so one seed rendered with
    different labels shows the same place with different camera faults.
    """
    ci = _check_label(label)
    seed = _check_seed(seed)
    W, H = _check_size(size)
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    u = min(W, H) / 120.0
    params: dict = {"label": label, "seed": seed, "width": W, "height": H, "base": base}
    ps = _Params(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))), params)
    pc = _Params(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, ci))), params)
    light = _sample_lighting(ps)
    osd = _sample_osd(ps)
    if label == "turned_away":
        img = _render_away(pc, light, W, H)
    elif base == "engine":
        img = _engine_scene(seed, W, H, params)
    else:
        img = _render_scene(ps, light, W, H)
    # auto exposure meters the image reaching the sensor and partly
    # compensates towards a target level (its gain also amplifies noise)
    ae_strength = pc.uniform("cam_ae_strength", 0.3, 0.85)
    ae_target = pc.uniform("cam_ae_target", 95.0, 135.0)

    def auto_exposure(im):
        g = (ae_target / max(float(im.mean()), 2.0)) ** ae_strength
        return min(max(g, 0.5), 3.5)

    if label == "normal":
        exposure = pc.uniform("cam_exposure", 0.8, 1.2)
        if pc.flag("cam_underexposed", 0.12):
            exposure = round(exposure * pc.uniform("cam_underexposure_factor", 0.35, 0.6), 4)
        if pc.flag("optics_soft", 0.35):
            img = _blur(img, pc.uniform("optics_blur_sigma", 0.4, 1.3) * u)
        g = auto_exposure(img)
        frame = _sensor(pc, img, light, W, H, exposure=exposure * g, gain=max(1.0, g))
    elif label == "covered":
        img = _apply_cover(pc, img, light, W, H)
        if pc.flag("optics_soft", 0.25):
            img = _blur(img, pc.uniform("optics_blur_sigma", 0.4, 1.3) * u)
        exposure = pc.uniform("cam_exposure", 0.8, 1.2)
        g = auto_exposure(img)
        frame = _sensor(pc, img, light, W, H, exposure=exposure * g, gain=max(1.0, g))
    elif label == "defocused":
        img = apply_defocus_fault(pc, img, u)
        exposure = pc.uniform("cam_exposure", 0.8, 1.2)
        g = auto_exposure(img)
        frame = _sensor(pc, img, light, W, H, exposure=exposure * g, gain=max(1.0, g))
    elif label == "too_dark":
        # exposure collapsed to a few percent (failed IR illuminator, stuck
        # shutter, lights off); the gain amplifies the noise
        dark = sample_too_dark(pc)
        frame = _sensor(pc, img, light, W, H, exposure=dark["exposure"], gain=dark["gain"], ir=dark["ir"],
                        chroma_noise=dark["chroma_noise"])
    elif label == "dirty_lens":
        img = apply_dirty_lens(pc, img, light, W, H)
        exposure = pc.uniform("cam_exposure", 0.8, 1.2)
        g = auto_exposure(img)
        frame = _sensor(pc, img, light, W, H, exposure=exposure * g, gain=max(1.0, g))
    else:  # turned_away
        exposure = pc.uniform("cam_exposure", 0.8, 1.2)
        g = auto_exposure(img)
        frame = _sensor(pc, img, light, W, H, exposure=exposure * g, gain=max(1.0, g))
    _draw_osd(frame, osd, W, H)
    return frame, params


def generate_dataset(
    out_dir: str | Path,
    num_per_class: int = 100,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    progress: bool = True,
    base: str = "procedural",
    classes: tuple[str, ...] | list[str] | None = None,
) -> Path:
    """Write ``num_per_class`` frames per class as ``out_dir/<class>/<class>_<NNNNN>.png``.

    Also writes ``provenance.jsonl`` (one sorted-key JSON line per image) and
    ``card.yaml``. Generation happens in ``<out_dir>.tmp-<pid>`` which is moved
    into place at the end, so an interrupted run never leaves a folder that
    looks complete. Raises FileExistsError if ``out_dir`` exists and
    ValueError for bad arguments. Same arguments give byte-identical output.
    ``classes`` (default :data:`CLASSES`) may add labels of :data:`EXTRA_CLASSES`
    (e.g. ``CLASSES + ("dirty_lens",)``); a class's frames do not depend on
    which other classes are generated.
    """
    if not isinstance(num_per_class, numbers.Integral) or isinstance(num_per_class, bool) or num_per_class < 1:
        raise ValueError(f"num_per_class must be an int >= 1, got {num_per_class!r}")
    num_per_class = int(num_per_class)
    if num_per_class > 99999:
        raise ValueError(f"num_per_class must be <= 99999 (5-digit file names), got {num_per_class}")
    W, H = _check_size(size)
    seed = _check_seed(seed)
    labels = _check_classes(classes)
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"output directory already exists, refusing to overwrite: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for c in labels:
            (tmp / c).mkdir()
        counts = {c: 0 for c in labels}
        version = GENERATOR_VERSION
        with open(tmp / "provenance.jsonl", "w", encoding="utf-8", newline="\n") as prov, tqdm(
            total=num_per_class * len(labels), disable=not progress, unit="img", desc="camera_health",
            dynamic_ncols=True,
        ) as bar:
            for c in labels:
                ci = ALL_CLASSES.index(c)
                for i in range(num_per_class):
                    s = derive_seed(seed, ci, i)
                    frame, params = render_frame(c, s, (W, H), base)
                    rel = f"{c}/{c}_{i:05d}.png"
                    Image.fromarray(frame, "RGB").save(tmp / rel, format="PNG", optimize=False, compress_level=1)
                    rec = {
                        "file": rel,
                        "label": c,
                        "generator": GENERATOR_NAME,
                        "generator_version": version,
                        "seed": s,
                        "params": params,
                        "licence": "generated",
                    }
                    prov.write(json.dumps(rec, sort_keys=True, ensure_ascii=True) + "\n")
                    counts[c] += 1
                    bar.update(1)
        digest = hashlib.sha256((tmp / "provenance.jsonl").read_bytes()).hexdigest()
        card = {
            "name": DATASET_NAME,
            "task": "classification",
            "source": f"{GENERATOR_NAME} {version}",
            "licence": "generated",
            "format": "class folders",
            "image_format": "png",
            "classes": list(labels),
            "counts": counts,
            "total": sum(counts.values()),
            "generation": {"num_per_class": num_per_class, "size": [W, H], "seed": seed, "base": base,
                           **({"classes": list(labels)} if labels != CLASSES else {})},
            "provenance": "provenance.jsonl",
            "sha256": {"provenance.jsonl": digest},
        }
        with open(tmp / "card.yaml", "w", encoding="utf-8", newline="\n") as fh:
            yaml.safe_dump(card, fh, sort_keys=False, default_flow_style=False)
        if out.exists():
            raise FileExistsError(f"output directory appeared during generation, refusing to overwrite: {out}")
        try:
            os.replace(tmp, out)
        except OSError as e:
            if out.exists():  # lost a race against another generation (non-empty target)
                raise FileExistsError(f"output directory appeared during generation: {out}") from e
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m synthetic.camera_health",
        description="Generate a synthetic camera-health classification dataset (class folders of PNGs).",
    )
    ap.add_argument("out", help="output directory (must not exist)")
    ap.add_argument("--per-class", type=int, default=100, help="images per class (default 100)")
    ap.add_argument("--size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"),
                    help="frame width and height (default 160 120)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    ap.add_argument("--classes", nargs="+", default=None, metavar="LABEL",
                    help=f"labels to generate (default: {' '.join(CLASSES)}; also: {' '.join(EXTRA_CLASSES)})")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = ap.parse_args(argv)
    try:
        out = generate_dataset(args.out, args.per_class, tuple(args.size), args.seed, progress=not args.no_progress,
                               classes=args.classes)
    except (ValueError, FileExistsError) as e:
        ap.error(str(e))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
