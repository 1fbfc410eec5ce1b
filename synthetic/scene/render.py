"""Render one camera frame: background, cast shadows, props and agents.

Objects (agents and props) are sorted far-to-near by the camera depth of their
ground reference point and drawn with OpenCV (painter's algorithm); each body
part is itself depth-sorted within its object. Every shape is drawn twice: into
the RGB image (anti-aliased) and into an int32 instance mask (``identity`` for
agents, negative ids for props, 0 for background), which gives per object the
pixels it covers alone (counted right after it is drawn) and the pixels still
visible after all nearer objects are drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .agents import Person, Vehicle, person_skeletons, rider_skeleton
from .camera import Camera
from .sprites import SpriteBank, composite
from .world import Prop, World

__all__ = ["Light", "PersonSprites", "RenderResult", "render_frame", "agent_states"]

_AA = cv2.LINE_AA
_SHIFT = 4
_ONE = 16.0
_NEAR = 0.3            # objects with a point closer than this (metres) are not drawn
_STRIDE = 1.45         # gait cycle length (m) for a 1.75 m person
_BAG = {"none": 0, "shoulder": 1, "backpack": 2}


@dataclass
class Light:
    """Lighting of one frame (all colours are RGB multipliers of albedo)."""

    sun_dir: tuple = (0.4, 0.3, 0.866)      # unit vector towards the sun
    sun: tuple = (0.75, 0.72, 0.66)          # direct light
    amb: tuple = (0.42, 0.45, 0.5)           # sky / ambient light
    shadows: bool = True
    shadow_softness: float = 1.0             # blur of cast shadows (pixels at 640 px width)
    sky_top: tuple = (85, 135, 205)
    sky_horizon: tuple = (190, 208, 225)
    cloud: tuple = (235, 235, 238)
    lamps: float = 0.0                       # emissive light (street lamps, windows) multiplier
    lamp_rgb: tuple = (1.0, 0.85, 0.6)
    headlights: bool = False
    ir: bool = False


@dataclass
class RenderResult:
    image: np.ndarray                        # H x W x 3 uint8 RGB
    mask: np.ndarray                         # H x W int32 instance ids
    objects: list                            # per visible agent dicts (see render_frame)
    headlights: list = field(default_factory=list)  # [(u, v, radius_px, identity)]
    depth: np.ndarray | None = None          # H x W float32 distance (metres) when requested


# --------------------------------------------------------------------------
# shape lists
class _Shapes:
    """Depth-sorted 2-D shapes of one object, with its amodal extent."""

    __slots__ = ("items", "x0", "y0", "x1", "y1", "n")

    def __init__(self):
        self.items = []
        self.x0 = self.y0 = math.inf
        self.x1 = self.y1 = -math.inf
        self.n = 0

    def _ext(self, xs, ys, pad=0.0):
        a, b = min(xs) - pad, max(xs) + pad
        c, d = min(ys) - pad, max(ys) + pad
        if a < self.x0:
            self.x0 = a
        if b > self.x1:
            self.x1 = b
        if c < self.y0:
            self.y0 = c
        if d > self.y1:
            self.y1 = d

    def poly(self, xs, ys, col, depth):
        self._ext(xs, ys)
        pts = np.array([[round(x * _ONE - 8), round(y * _ONE - 8)] for x, y in zip(xs, ys)], np.int32)
        self.items.append((-depth, self.n, 0, pts, col))
        self.n += 1

    def hull(self, xs, ys, col, depth):
        self._ext(xs, ys)
        pts = np.array([[round(x * _ONE - 8), round(y * _ONE - 8)] for x, y in zip(xs, ys)], np.int32)
        self.items.append((-depth, self.n, 0, cv2.convexHull(pts), col))
        self.n += 1

    def circle(self, x, y, r, col, depth):
        self._ext((x,), (y,), r)
        self.items.append((-depth, self.n, 1, (round(x * _ONE - 8), round(y * _ONE - 8), max(round(r * _ONE), 8)),
                           col))
        self.n += 1

    def ring(self, xs, ys, th, col, depth):
        self._ext(xs, ys, th * 0.5)
        pts = np.array([[round(x * _ONE - 8), round(y * _ONE - 8)] for x, y in zip(xs, ys)], np.int32)
        self.items.append((-depth, self.n, 2, (pts, max(1, int(round(th)))), col))
        self.n += 1

    def line(self, x0, y0, x1, y1, w, col, depth):
        dx, dy = x1 - x0, y1 - y0
        n = math.hypot(dx, dy) or 1e-6
        ux, uy = -dy / n * w * 0.5, dx / n * w * 0.5
        self.poly((x0 + ux, x1 + ux, x1 - ux, x0 - ux), (y0 + uy, y1 + uy, y1 - uy, y0 - uy), col, depth)

    def draw(self, img, mask, ident: int):
        self.items.sort(key=lambda it: (it[0], it[1]))
        for _, _, kind, data, col in self.items:
            if kind == 0:
                cv2.fillConvexPoly(img, data, col, _AA, _SHIFT)
                cv2.fillConvexPoly(mask, data, ident, cv2.LINE_8, _SHIFT)
            elif kind == 1:
                c = (data[0], data[1])
                cv2.circle(img, c, data[2], col, -1, _AA, _SHIFT)
                cv2.circle(mask, c, data[2], ident, -1, cv2.LINE_8, _SHIFT)
            else:
                pts, th = data
                cv2.polylines(img, [pts], True, col, th, _AA, _SHIFT)
                cv2.polylines(mask, [pts], True, ident, th, cv2.LINE_8, _SHIFT)


class _SpriteShape:
    """A real-appearance person (:mod:`synthetic.scene.sprites`) standing where the procedural body
    would: the sprite's matte spans the body's projected height, its feet on the ground point."""

    __slots__ = ("items", "x0", "y0", "x1", "y1", "sprite", "flip", "hue", "light", "box")

    def __init__(self, body: _Shapes, sprite, flip: bool, hue: float, light, foot_x: float):
        sh, sw = sprite.alpha.shape
        h = max(1, int(round(body.y1 - body.y0)))
        w = max(1, int(round(sw * h / sh)))
        x0 = int(round(foot_x - w / 2.0))
        y0 = int(round(body.y1)) - h
        self.box = (x0, y0, w, h)
        self.x0, self.y0, self.x1, self.y1 = float(x0), float(y0), float(x0 + w), float(y0 + h)
        self.items = [sprite]
        self.sprite, self.flip, self.hue = sprite, flip, hue
        self.light = np.clip(np.asarray(light, np.float32), 0.0, 1.3)

    def draw(self, img, mask, ident: int):
        x0, y0, w, h = self.box
        composite(img, mask, ident, self.sprite, x0, y0, w, h, self.light, self.flip, self.hue)


class PersonSprites:
    """Which people of a scene are drawn as real-appearance sprites: ``assign`` maps an identity to
    ``(track, flip, hue_shift)`` in ``bank`` (see :class:`synthetic.scene.sprites.SpriteBank`)."""

    def __init__(self, bank: SpriteBank, assign: dict):
        self.bank = bank
        self.assign = assign

    def shape(self, p: Person, body: _Shapes, uv, walked: float, lit: "_Lighting", pos, C) -> _SpriteShape:
        track, flip, hue = self.assign[p.identity]
        base = lit.at(pos[0], pos[1])
        to_cam = C[:2] - np.asarray(pos)
        to_cam = to_cam / (np.linalg.norm(to_cam) + 1e-9)
        light = lit.face(base, (to_cam[0] * 0.8, to_cam[1] * 0.8, 0.6))
        return _SpriteShape(body, self.bank.frame(track, walked), flip, hue, light, float(uv[34][0]))


def _shade(col, L):
    return (min(255.0, col[0] * L[0]), min(255.0, col[1] * L[1]), min(255.0, col[2] * L[2]))


class _Lighting:
    """Per-frame light evaluation helpers."""

    def __init__(self, light: Light, world: World):
        self.s = np.asarray(light.sun_dir, float)
        self.s /= np.linalg.norm(self.s)
        self.sun = np.asarray(light.sun, float)
        self.amb = np.asarray(light.amb, float)
        self.sl = [float(v) for v in self.s]
        self.sunl = [float(v) for v in self.sun]
        self.light = light
        self.lamps = world.lamps if light.lamps > 0 else []
        self.lamp_rgb = np.asarray(light.lamp_rgb, float) * light.lamps

    def at(self, x: float, y: float) -> np.ndarray:
        """Ambient + lamp light at a ground position."""
        a = self.amb
        if self.lamps:
            e = 0.0
            for lx, ly, lz in self.lamps:
                r2 = (x - lx) ** 2 + (y - ly) ** 2 + lz * lz
                e += lz ** 3 / (r2 * math.sqrt(r2))
            a = a + self.lamp_rgb * min(e, 1.5) * 0.9
        return a

    def face(self, base, n) -> tuple:
        s = self.sl
        k = n[0] * s[0] + n[1] * s[1] + n[2] * s[2]
        if k <= 0.0:
            return (float(base[0]), float(base[1]), float(base[2]))
        u = self.sunl
        return (float(base[0]) + u[0] * k, float(base[1]) + u[1] * k, float(base[2]) + u[2] * k)


# --------------------------------------------------------------------------
# agent state
def agent_states(people: list[Person], vehicles: list[Vehicle], t: float, states: dict | None = None):
    """Positions and headings at time ``t``: ``({id: (x, y, heading, dist)}, ...)``.

    ``states`` (identity -> ``(x, y, heading, dist)``) overrides the planned trajectories of those people
    (the crowd simulation's positions, see :mod:`synthetic.scene.crowd`).
    """
    vst = {v.identity: v.trajectory.state(t) for v in vehicles}
    pst = {}
    for p in people:
        if p.riding is not None:
            pst[p.identity] = vst[p.riding]
        elif states is not None and p.identity in states:
            pst[p.identity] = states[p.identity]
        else:
            pst[p.identity] = p.trajectory.state(t)
    return pst, vst


# --------------------------------------------------------------------------
def _box_corners(cx, cy, heading, z0, z1, fl0, fl1, hw0, hw1, fwd0=0.0, fwd1=0.0):
    """8 corners of an oriented frustum: bottom (fl, fr, br, bl) then top.

    Bottom spans forward [-fl0/2, fl0/2] around ``fwd0``, top [-fl1/2, fl1/2]
    around ``fwd1``; half widths ``hw0``/``hw1``.
    """
    c, s = math.cos(heading), math.sin(heading)
    out = []
    for z, L, hw, off in ((z0, fl0, hw0, fwd0), (z1, fl1, hw1, fwd1)):
        for fw, lat in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
            a = off + fw * L * 0.5
            b = lat * hw
            out.append((cx + a * c - b * s, cy + a * s + b * c, z))
    return np.array(out)


_FACES = ((4, 5, 6, 7), (0, 1, 5, 4), (2, 3, 7, 6), (1, 2, 6, 5), (3, 0, 4, 7))  # top, front, back, right, left


def _box_faces(S: _Shapes, P: np.ndarray, uv, dep, C: np.ndarray, base, col, lit: _Lighting, depth,
               faces=_FACES, skip=()):
    """Draw the camera-facing faces of a convex 8-corner solid; returns visible face indices."""
    Q = P.tolist() if isinstance(P, np.ndarray) else P
    cx = sum(q[0] for q in Q) * 0.125
    cy = sum(q[1] for q in Q) * 0.125
    cz = sum(q[2] for q in Q) * 0.125
    Cx, Cy, Cz = float(C[0]), float(C[1]), float(C[2])
    vis = []
    for fi, f in enumerate(faces):
        if fi in skip:
            continue
        a, b, _, d = (Q[i] for i in f)
        ux, uy, uz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
        vx, vy, vz = d[0] - a[0], d[1] - a[1], d[2] - a[2]
        nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
        fx = sum(Q[i][0] for i in f) * 0.25
        fy = sum(Q[i][1] for i in f) * 0.25
        fz = sum(Q[i][2] for i in f) * 0.25
        if nx * (fx - cx) + ny * (fy - cy) + nz * (fz - cz) < 0:
            nx, ny, nz = -nx, -ny, -nz
        if nx * (Cx - fx) + ny * (Cy - fy) + nz * (Cz - fz) <= 0:
            continue
        inv = 1.0 / (math.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12)
        L = lit.face(base, (nx * inv, ny * inv, nz * inv))
        S.poly([uv[i][0] for i in f], [uv[i][1] for i in f], _shade(col, L), depth)
        vis.append(fi)
    return vis


def _quad_lerp(uv, f, a0, a1, b0, b1):
    """Sub-quad of projected face ``f`` (corner order bl, br, tr, tl) in its (a: along, b: up) parameters."""
    p0, p1, p2, p3 = (uv[i] for i in f)

    def at(a, b):
        x = (p0[0] * (1 - a) + p1[0] * a) * (1 - b) + (p3[0] * (1 - a) + p2[0] * a) * b
        y = (p0[1] * (1 - a) + p1[1] * a) * (1 - b) + (p3[1] * (1 - a) + p2[1] * a) * b
        return x, y

    pts = (at(a0, b0), at(a1, b0), at(a1, b1), at(a0, b1))
    return [p[0] for p in pts], [p[1] for p in pts]


# --------------------------------------------------------------------------
# people
def _person_shapes(p: Person, uv, dep, P: np.ndarray, F: float, C: np.ndarray, lit: _Lighting, pos, heading):
    look = p.look
    H = look.height
    S = _Shapes()
    hp = F * H / max(dep[34], 1e-3)
    full = hp >= 40
    tiny = hp < 14
    scale = H / 1.75
    # light on the camera-facing side
    base = lit.at(pos[0], pos[1])
    to_cam = C[:2] - np.asarray(pos)
    to_cam = to_cam / (np.linalg.norm(to_cam) + 1e-9)
    Lc = lit.face(base, (to_cam[0] * 0.8, to_cam[1] * 0.8, 0.6))
    skin = _shade(look.skin, Lc)
    trou = _shade(look.trousers, Lc)
    shirt_side = _shade(look.shirt, Lc)
    shoes = _shade(look.shoes, Lc)
    hair = _shade(look.hair, Lc)

    def limb(i, j, ri, rj, col, bias=0.0, cap=True):
        x0, y0 = uv[i]
        x1, y1 = uv[j]
        w0 = F * ri * scale / dep[i]
        w1 = F * rj * scale / dep[j]
        dx, dy = x1 - x0, y1 - y0
        n = math.hypot(dx, dy) or 1e-6
        ux, uy = -dy / n, dx / n
        d = (dep[i] + dep[j]) * 0.5 + bias
        S.poly((x0 + ux * w0, x1 + ux * w1, x1 - ux * w1, x0 - ux * w0),
               (y0 + uy * w0, y1 + uy * w1, y1 - uy * w1, y0 - uy * w0), col, d)
        if cap and full:
            S.circle(x1, y1, w1, col, d)

    # legs (slightly behind the torso in the draw order)
    for o in (4, 8):
        if tiny:
            limb(o, o + 2, 0.075, 0.05, trou, 0.06, False)
            continue
        limb(o, o + 1, 0.085, 0.062, trou, 0.06)
        limb(o + 1, o + 2, 0.062, 0.047, trou, 0.06)
        if full:
            limb(o + 2, o + 3, 0.048, 0.042, shoes, 0.05, False)
    # torso
    T = P[18:26]
    tuv = uv[18:26]
    tdep = sum(dep[18:26]) / 8.0 + 0.02
    if not full:
        S.hull([q[0] for q in tuv], [q[1] for q in tuv], shirt_side, tdep)
    else:
        vis = _box_faces(S, T, tuv, dep[18:26], C, base, look.shirt, lit, tdep)
        if look.pattern != "plain" and hp >= 60:
            col2 = _shade(look.shirt2, Lc)
            nb = 5
            for fi in vis:
                if fi == 0:
                    continue
                f = _FACES[fi]
                for k in range(nb):
                    if look.pattern == "stripes":
                        if k % 2:
                            xs, ys = _quad_lerp(tuv, f, 0.0, 1.0, k / nb, (k + 1) / nb)
                            S.poly(xs, ys, col2, tdep)
                    else:
                        for m in range(3):
                            if (k + m) % 2:
                                xs, ys = _quad_lerp(tuv, f, m / 3, (m + 1) / 3, k / nb, (k + 1) / nb)
                                S.poly(xs, ys, col2, tdep)
    # bag
    if look.bag != "none" and not tiny:
        B = P[26:34]
        buv = uv[26:34]
        bd = sum(dep[26:34]) / 8.0
        if full:
            _box_faces(S, B, buv, dep[26:34], C, base, look.bag_colour, lit, bd)
        else:
            S.hull([q[0] for q in buv], [q[1] for q in buv], _shade(look.bag_colour, Lc), bd)
    # arms
    sleeve = shirt_side
    fore = sleeve if look.long_sleeves else skin
    for o in (12, 15):
        if tiny:
            limb(o, o + 2, 0.045, 0.035, sleeve, -0.005, False)
            continue
        if full:
            x, y = uv[o]
            S.circle(x, y, F * 0.058 * scale / dep[o], sleeve, dep[o] - 0.004)
        limb(o, o + 1, 0.056, 0.047, sleeve, -0.005)
        limb(o + 1, o + 2, 0.044, 0.034, fore, -0.005, False)
        if full:
            x, y = uv[o + 2]
            S.circle(x, y, F * 0.042 * scale / dep[o + 2], skin, (dep[o + 2] + dep[o + 1]) * 0.5 - 0.006)
    # neck, head and hair
    hr = F * 0.064 * H / dep[0]
    if full:
        limb(2, 3, 0.058, 0.052, skin, 0.0, False)
    if look.hair_style == "long" and not tiny:
        limb(1, 36, 0.06, 0.075, hair, 0.0, False)
    S.circle(uv[0][0], uv[0][1], hr, skin, dep[0])
    if look.hair_style != "bald":
        S.circle(uv[1][0], uv[1][1], hr * 0.97, hair, dep[1])
    return S


# --------------------------------------------------------------------------
# vehicles
_TYRE = (28, 28, 30)
_GLASS = (48, 58, 70)


def _vehicle_shapes(v: Vehicle, state, cam: Camera, C: np.ndarray, lit: _Lighting, light: Light):
    x, y, hd, dist = state
    S = _Shapes()
    c, s = math.cos(hd), math.sin(hd)
    base = lit.at(x, y)
    L, Wd, Hv = v.length, v.width, v.height
    lights = []
    if v.category == "bike":
        return _bike_shapes(v, state, cam, C, lit, base), [], None
    if v.category == "car":
        z0, z1 = 0.26, 0.56 * Hv + 0.04
        cab0, cab1, coff0, coff1, chw = 0.56 * L, 0.40 * L, -0.05 * L, -0.09 * L, 0.43 * Wd
        wr = 0.31
    else:  # van
        z0, z1 = 0.32, 0.44 * Hv
        cab0, cab1, coff0, coff1, chw = 0.90 * L, 0.78 * L, -0.05 * L, -0.11 * L, 0.49 * Wd
        wr = 0.35
    body = _box_corners(x, y, hd, z0, z1, L, L * 0.985, Wd * 0.5, Wd * 0.5 - 0.01)
    cab = _box_corners(x, y, hd, z1, Hv, cab0, cab1, Wd * 0.5 - 0.02, chw, coff0, coff1)
    wheels = []
    nseg = 10
    ang = np.linspace(0, 2 * np.pi, nseg, endpoint=False)
    for fw in (0.34 * L, -0.33 * L):
        for lat in (Wd * 0.5 - 0.12, -(Wd * 0.5 - 0.12)):
            a = fw + wr * np.cos(ang)
            z = wr + wr * np.sin(ang)
            wheels.append(np.stack([x + a * c - lat * s, y + a * s + lat * c, z], -1))
    # lights: two on the front face, two at the back
    lamp_pts = []
    lz = z0 + 0.55 * (z1 - z0)
    for fw in (L * 0.5 + 0.005, -L * 0.5 - 0.005):
        for lat in (Wd * 0.5 - 0.28, -(Wd * 0.5 - 0.28)):
            for da, dz in ((-0.13, -0.06), (0.13, -0.06), (0.13, 0.06), (-0.13, 0.06)):
                b = lat + da
                lamp_pts.append((x + fw * c - b * s, y + fw * s + b * c, lz + dz))
    allP = np.concatenate([body, cab, np.concatenate(wheels), np.array(lamp_pts)])
    uvA, depA = cam.project(allP)
    if depA.min() < _NEAR:
        return None, [], None
    uv = uvA.tolist()
    dep = depA.tolist()
    d0 = float(np.mean(depA[:8]))
    # wheels (behind the body)
    tyre = _shade(_TYRE, base)
    for k in range(4):
        o = 16 + k * nseg
        S.poly([q[0] for q in uv[o:o + nseg]], [q[1] for q in uv[o:o + nseg]], tyre, d0 + 1.0)
    col = v.colour
    vis = _box_faces(S, body, uv[:8], dep[:8], C, base, col, lit, d0)
    cuv = uv[8:16]
    cvis = _box_faces(S, cab, cuv, dep[8:16], C, base, col, lit, d0 - 0.01)
    # windows: inset quads on the visible cabin faces
    sky_ref = np.asarray(light.sky_horizon, float) / 255.0
    for fi in cvis:
        if fi == 0:
            continue
        f = _FACES[fi]
        if v.category == "van" and fi in (3, 4):
            a0, a1 = 0.62, 0.93  # front side windows only
            if fi == 4:
                a0, a1 = 1 - a1, 1 - a0
        else:
            a0, a1 = 0.07, 0.93
        xs, ys = _quad_lerp(cuv, f, a0, a1, 0.1, 0.88)
        n = np.cross(cab[f[1]] - cab[f[0]], cab[f[3]] - cab[f[0]])
        up = abs(n[2]) / (np.linalg.norm(n) + 1e-9)
        g = tuple(min(255.0, _GLASS[i] * (base[i] + 0.5 * lit.sun[i]) + 70 * up * sky_ref[i] * base[i])
                  for i in range(3))
        S.poly(xs, ys, g, d0 - 0.02)
    # lights
    night = light.headlights
    for k, fi in enumerate((1, 1, 2, 2)):
        if fi not in vis:
            continue
        o = 16 + 4 * nseg + 4 * k
        q = uv[o:o + 4]
        if fi == 1:
            colr = (255.0, 252.0, 238.0) if night else _shade((225, 225, 215), base)
            if night:
                cx = sum(p[0] for p in q) / 4
                cy = sum(p[1] for p in q) / 4
                lights.append((cx, cy, max(1.0, cam.fx * 0.2 / dep[o])))
        else:
            colr = (255.0, 40.0, 30.0) if night else _shade((170, 30, 25), base)
        S.poly([p[0] for p in q], [p[1] for p in q], colr, d0 - 0.03)
    # shadow outline: footprint + roof
    return S, lights, (body, cab)


def _bike_shapes(v: Vehicle, state, cam: Camera, C, lit: _Lighting, base):
    x, y, hd, dist = state
    S = _Shapes()
    c, s = math.cos(hd), math.sin(hd)
    L = v.length
    wr = 0.34
    pts = []
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    for fw in (L * 0.5 - wr, -(L * 0.5 - wr)):
        a = fw + wr * np.cos(ang)
        z = wr + wr * np.sin(ang)
        pts.append(np.stack([x + a * c, y + a * s, z], -1))
    frame_local = ((-(L * 0.5 - wr), 0, wr), (0.02 * L, 0, 0.30), (-0.12 * L, 0, 0.92 * v.height),
                   (0.27 * L, 0, 0.95 * v.height), (L * 0.5 - wr, 0, wr), (0.30 * L, 0.26, v.height),
                   (0.30 * L, -0.26, v.height), (-0.12 * L, 0, 0.95 * v.height))
    fr = np.array([(x + a * c - b * s, y + a * s + b * c, z) for a, b, z in frame_local])
    allP = np.concatenate(pts + [fr])
    uvA, depA = cam.project(allP)
    if depA.min() < _NEAR:
        return None
    uv = uvA.tolist()
    d0 = float(depA.mean())
    tyre = _shade(_TYRE, base)
    col = _shade(v.colour, base)
    th = max(1.0, cam.fx * 0.05 / d0)
    for k in range(2):
        q = uv[12 * k:12 * k + 12]
        S.ring([p[0] for p in q], [p[1] for p in q], th, tyre, d0 + 0.01)
    f = uv[24:]
    w = max(1.0, cam.fx * 0.035 / d0)
    for i, j in ((0, 1), (1, 2), (2, 0), (1, 3), (2, 3), (3, 4), (5, 6)):
        S.line(f[i][0], f[i][1], f[j][0], f[j][1], w, col, d0)
    S.line(f[7][0] - w * 1.5, f[7][1], f[7][0] + w * 1.5, f[7][1], w * 1.2, _shade((30, 30, 30), base), d0)
    return S


# --------------------------------------------------------------------------
# props
def _prop_shapes(q: Prop, cam: Camera, C, lit: _Lighting, light: Light, world: World, lights: list):
    S = _Shapes()
    base = lit.at(q.x, q.y)
    yaw = math.radians(q.yaw)
    col = q.colour
    solids = []  # 8-corner solids for shadows
    if q.kind in ("bench", "bin", "pillar"):
        if q.kind == "bench":
            sc = q.size
            parts = [
                _box_corners(q.x, q.y, yaw, 0.42 * sc, 0.48 * sc, 0.45 * sc, 0.45 * sc, 0.8 * sc, 0.8 * sc),
                _box_corners(q.x - 0.2 * sc * math.cos(yaw), q.y - 0.2 * sc * math.sin(yaw), yaw,
                             0.5 * sc, 0.9 * sc, 0.06, 0.06, 0.8 * sc, 0.8 * sc),
            ]
            for lat in (-0.7 * sc, 0.7 * sc):
                lx, ly = q.x - lat * math.sin(yaw), q.y + lat * math.cos(yaw)
                parts.insert(0, _box_corners(lx, ly, yaw, 0.0, 0.42 * sc, 0.4 * sc, 0.4 * sc, 0.03, 0.03))
            cols = [(55, 55, 58), (55, 55, 58), col, col]
        elif q.kind == "bin":
            sc = q.size
            parts = [_box_corners(q.x, q.y, yaw, 0.0, 0.95 * sc, 0.5 * sc, 0.55 * sc, 0.25 * sc, 0.28 * sc)]
            cols = [col]
        else:
            h = world.ceiling if world.surface == "indoor" else q.size
            parts = [_box_corners(q.x, q.y, yaw, 0.0, h, 0.6, 0.6, 0.3, 0.3)]
            cols = [col]
        allP = np.concatenate(parts)
        uvA, depA = cam.project(allP)
        if depA.min() < _NEAR:
            return None, solids
        uv = uvA.tolist()
        dep = depA.tolist()
        for k, (Pk, ck) in enumerate(zip(parts, cols)):
            o = 8 * k
            _box_faces(S, Pk, uv[o:o + 8], dep[o:o + 8], C, base, ck, lit, sum(dep[o:o + 8]) / 8)
        solids = parts
        return S, solids
    if q.kind == "pole":
        h = q.size
        ax, ay = math.cos(yaw), math.sin(yaw)
        P = np.array([(q.x, q.y, 0.0), (q.x, q.y, h), (q.x + 1.1 * ax, q.y + 1.1 * ay, h + 0.05),
                      (q.x + 1.1 * ax, q.y + 1.1 * ay, h - 0.12)])
        uvA, depA = cam.project(P)
        if depA.min() < _NEAR:
            return None, solids
        uv = uvA.tolist()
        dep = depA.tolist()
        c_ = _shade(col, lit.face(base, (C[0] - q.x, C[1] - q.y, 0.0) / (np.hypot(C[0] - q.x, C[1] - q.y) + 1e-9)))
        F = cam.fx
        w0, w1 = F * 0.16 / dep[0], F * 0.1 / dep[1]
        x0, y0 = uv[0]
        x1, y1 = uv[1]
        S.poly((x0 - w0 * 0.5, x0 + w0 * 0.5, x1 + w1 * 0.5, x1 - w1 * 0.5), (y0, y0, y1, y1), c_, dep[0])
        S.line(x1, y1, uv[2][0], uv[2][1], max(1.0, F * 0.07 / dep[1]), c_, dep[1])
        lamp_c = (255.0, 240.0, 200.0) if light.lamps > 0 else _shade((210, 210, 205), base)
        r = F * 0.22 / dep[3]
        if light.lamps > 0:
            lights.append((uv[3][0], uv[3][1] + r * 0.3, max(1.0, r * 0.8 * light.lamps)))
        S.poly((uv[3][0] - r, uv[3][0] + r, uv[2][0] + r * 0.8, uv[2][0] - r * 0.8),
               (uv[3][1], uv[3][1], uv[2][1], uv[2][1]), lamp_c, dep[3] - 0.01)
        solids = [_box_corners(q.x, q.y, 0.0, 0.0, h, 0.14, 0.14, 0.07, 0.07)]
        return S, solids
    if q.kind == "tree":
        h = q.size
        cz = 0.62 * h
        cr = 0.26 * h
        offs = ((0.0, 0.0, 0.0, 1.0, 1.0), (-0.45, 0.2, -0.15, 0.75, 0.82), (0.45, -0.2, -0.1, 0.8, 0.9),
                (0.1, 0.4, 0.25, 0.7, 1.08), (-0.2, -0.4, 0.2, 0.72, 0.95))
        P = [(q.x, q.y, 0.0), (q.x, q.y, cz)]
        for ox, oy, oz, _, _ in offs:
            P.append((q.x + ox * cr, q.y + oy * cr, cz + oz * cr))
        uvA, depA = cam.project(np.array(P))
        if depA.min() < _NEAR:
            return None, solids
        uv = uvA.tolist()
        dep = depA.tolist()
        F = cam.fx
        bark = _shade((85, 65, 48), base)
        w0, w1 = F * 0.3 / dep[0], F * 0.18 / dep[1]
        S.poly((uv[0][0] - w0 * 0.5, uv[0][0] + w0 * 0.5, uv[1][0] + w1 * 0.5, uv[1][0] - w1 * 0.5),
               (uv[0][1], uv[0][1], uv[1][1], uv[1][1]), bark, dep[0] + 0.5)
        for k, (ox, oy, oz, rr, kk) in enumerate(offs):
            # lit where the blob faces the sun
            n = np.array([ox, oy, oz + 0.3])
            n = n / (np.linalg.norm(n) + 1e-9)
            L = lit.face(base * kk, n * 0.6 + lit.s * 0.4)
            S.circle(uv[2 + k][0], uv[2 + k][1], F * rr * cr / dep[2 + k], _shade(col, L), dep[2 + k])
        solids = [("tree", q.x, q.y, h, cz, cr)]
        return S, solids
    return None, solids


# --------------------------------------------------------------------------
# shadows
def _ground_shadow(P: np.ndarray, s: np.ndarray) -> np.ndarray:
    k = P[..., 2:3] / s[2]
    G = P - k * s
    G[..., 2] = 0.0
    return G


def _shadow_polys(cam: Camera, solids_list, s: np.ndarray):
    """Image polygons (fixed point) of the ground shadows of 8-corner solids and trees."""
    polys = []
    for solid in solids_list:
        if isinstance(solid, tuple) and solid and solid[0] == "tree":
            _, x, y, h, cz, cr = solid
            ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
            canopy = np.stack([x + cr * 1.05 * np.cos(ang), y + cr * 1.05 * np.sin(ang), cz + 0.4 * cr * np.sin(ang)],
                              -1)
            trunk = _box_corners(x, y, 0.0, 0.0, cz, 0.25, 0.25, 0.12, 0.12)
            for P in (canopy, trunk):
                polys.append(_shadow_hull(cam, _ground_shadow(P, s)))
        else:
            polys.append(_shadow_hull(cam, _ground_shadow(solid, s)))
    return [p for p in polys if p is not None]


def _shadow_hull(cam: Camera, G: np.ndarray):
    uv, dep = cam.project(G)
    if dep.min() < _NEAR:
        return None
    pts = np.rint(uv * _ONE - 8).astype(np.int32)
    return cv2.convexHull(pts)


# --------------------------------------------------------------------------
def render_frame(world: World, cam: Camera, people: list[Person], vehicles: list[Vehicle], t: float,
                 light: Light, image_index: int = 0, need_depth: bool = False, hide: np.ndarray | None = None,
                 states: dict | None = None, sprites: PersonSprites | None = None) -> RenderResult:
    """Render camera ``cam`` at time ``t`` (seconds).

    Returns the RGB image, the instance mask and, for every agent whose amodal
    projection intersects the image, a dict with ``identity``, ``category``,
    ``bbox_visible`` ``[x1, y1, x2, y2]`` (None when fully occluded),
    ``bbox_amodal``, ``visible_fraction`` (visible pixels / pixels it covers
    alone in the image), ``truncation`` (fraction of the amodal box outside the
    image), ``visibility`` (``visible_fraction * (1 - truncation)``: occlusion
    and image border together, the MOT convention), ``pixel_height`` (amodal
    box height in pixels, including any part outside the image),
    ``visible_pixels``, ``world_position`` ``[x, y, z]``, ``heading`` (deg) and
    ``distance`` (metres from the camera).

    ``hide`` (H x W bool) marks pixels hidden by something in front of the
    lens (a camera fault's cover): they count as occluded, so they are left
    out of the visible pixels, boxes and fractions, each object then also gets
    ``fault_hidden_pixels`` (its pixels hidden that way), and they are 0 in
    the returned mask. ``states`` overrides people's positions (see
    :func:`agent_states`). ``sprites`` draws the people it assigns as real-appearance sprites.
    """
    W, H = cam.resolution
    F = cam.fx
    C = cam.position
    bg = world.background(cam, image_index)
    lit = _Lighting(light, world)
    # ---- background lighting
    g = lit.amb + lit.sun * max(lit.s[2], 0.0)
    lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * g[None, :].astype(np.float32), 0, 255)
    img = cv2.LUT(bg.albedo, lut.astype(np.uint8).reshape(1, 256, 3))
    if bg.sky is not None and not world.background_images:
        idx = np.arange(256)
        ti = (idx // 8) / 31.0
        ci = (idx % 8) / 7.0 * 0.85
        top = np.asarray(light.sky_top, float)
        hor = np.asarray(light.sky_horizon, float)
        cl = np.asarray(light.cloud, float)
        sky = top[None] + (hor - top)[None] * ti[:, None]
        sky = sky * (1 - ci[:, None]) + cl[None] * ci[:, None]
        slut = np.clip(sky + 0.5, 0, 255).astype(np.uint8).reshape(1, 256, 3)
        r = bg.sky_rows
        np.copyto(img[:r], cv2.LUT(bg.albedo[:r], slut), where=bg.sky)
    if light.lamps > 0 and bg.emissive is not None:
        img = cv2.addWeighted(img, 1.0, bg.emissive, float(light.lamps), 0.0)
    mask = np.zeros((H, W), np.int32)
    depth = bg.depth.copy() if need_depth else None

    # ---- agents: pose everyone, project all body points at once
    pst, vst = agent_states(people, vehicles, t, states)
    walkers = [p for p in people if p.riding is None]
    riders = [p for p in people if p.riding is not None]
    objs = []  # (sort depth, kind, payload)
    person_pts = []
    if walkers:
        pos = np.array([[pst[p.identity][0], pst[p.identity][1]] for p in walkers])
        hdg = np.array([pst[p.identity][2] for p in walkers])
        dist = np.array([pst[p.identity][3] for p in walkers])
        hgt = np.array([p.look.height for p in walkers])
        phase = np.array([p.phase0 for p in walkers]) + 2 * np.pi * dist / (_STRIDE * hgt / 1.75)
        amp = np.array([0.42 if p.trajectory.speed > 0 else 0.0 for p in walkers])
        Pw = person_skeletons(pos, hdg, phase, amp, hgt, np.array([p.look.build for p in walkers]),
                              np.array([p.look.shoulders for p in walkers]),
                              np.array([_BAG[p.look.bag] for p in walkers]))
        person_pts.extend(zip(walkers, Pw))
    for p in riders:
        bike = next(v for v in vehicles if v.identity == p.riding)
        x, y, hd, dist = vst[bike.identity]
        crank = p.phase0 + 2 * np.pi * dist / 5.5
        person_pts.append((p, rider_skeleton((x, y), hd, crank, p.look, bike)))
    if person_pts:
        allP = np.concatenate([q[1] for q in person_pts])
        uvA, depA = cam.project(allP)
        k = 0
        npp = len(person_pts[0][1])
        for p, Pp in person_pts:
            d = depA[k:k + npp]
            u = uvA[k:k + npp]
            k += npp
            if d.min() < _NEAR:
                continue
            # quick frustum cull with a generous margin
            hp = F * p.look.height / d[34]
            if (u[:, 0].max() < -hp or u[:, 0].min() > W + hp or u[:, 1].max() < -hp or u[:, 1].min() > H + hp):
                continue
            key = float(d[34]) - (0.05 if p.riding is not None else 0.0)
            objs.append((key, 0, (p, Pp, u.tolist(), d.tolist())))
    for v in vehicles:
        x, y, hd, dist = vst[v.identity]
        if abs(x) > world.E + 3 or abs(y) > world.E + 3:
            continue  # outside the square (behind the facades)
        dv = float((np.array([x, y, 0.0]) - C) @ cam._R[2])
        if dv < -max(v.length, 3.0):
            continue
        objs.append((dv, 1, v))
    for q in world.props:
        dq = float((np.array([q.x, q.y, 0.0]) - C) @ cam._R[2])
        if dq < -8.0:
            continue
        objs.append((dq, 2, q))
    objs.sort(key=lambda o: (-o[0], o[1]))

    # ---- build shapes (and shadow solids)
    built = []
    shadow_solids = []
    shadow_people = []
    lights_all = []
    for key, kind, payload in objs:
        if kind == 0:
            p, Pp, u, d = payload
            S = _person_shapes(p, u, d, Pp, F, C, lit, (Pp[34][0], Pp[34][1]), None)
            if sprites is not None and p.identity in sprites.assign and S.items:
                S = sprites.shape(p, S, u, pst[p.identity][3], lit, (Pp[34][0], Pp[34][1]), C)
            shadow_people.append(Pp)
            built.append((S, p.identity, "person", Pp[34], key))
        elif kind == 1:
            S, lts, solids = _vehicle_shapes(payload, vst[payload.identity], cam, C, lit, light)
            if S is None:
                continue
            x, y, hd, _ = vst[payload.identity]
            if solids is not None:
                shadow_solids.extend(solids)
            else:  # bike: a flat solid along the frame
                shadow_solids.append(_box_corners(x, y, hd, 0.0, payload.height * 0.9, payload.length * 0.9,
                                                  payload.length * 0.9, 0.05, 0.05))
            lights_all.extend((lx, ly, lr, payload.identity) for lx, ly, lr in lts)
            built.append((S, payload.identity, payload.category, (x, y, 0.0), key, hd))
        else:
            lts = []
            S, solids = _prop_shapes(payload, cam, C, lit, light, world, lts)
            if S is None:
                continue
            lights_all.extend((lx, ly, lr, payload.identity) for lx, ly, lr in lts)
            shadow_solids.extend(solids)
            built.append((S, payload.identity, "prop", (payload.x, payload.y, 0.0), key))

    # ---- shadows (cast + contact) darken the background before objects are drawn
    _draw_shadows(img, cam, light, lit, shadow_people, shadow_solids, vst, vehicles, W, H, world.E)

    # ---- draw far to near, counting each agent's pixels right after it is drawn
    records = []
    for item in built:
        S, ident, cat = item[0], item[1], item[2]
        if not S.items:
            continue
        x0, y0, x1, y1 = S.x0, S.y0, S.x1, S.y1
        if x1 < 0 or y1 < 0 or x0 > W or y0 > H:
            continue
        S.draw(img, mask, ident)
        if cat == "prop":
            if depth is not None:
                _depth_fill(depth, mask, ident, x0, y0, x1, y1, float(np.linalg.norm(np.asarray(item[3]) - C)), W, H)
            continue
        ix0, iy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
        ix1, iy1 = min(W, int(math.ceil(x1)) + 1), min(H, int(math.ceil(y1)) + 1)
        alone = 0
        if ix1 > ix0 and iy1 > iy0:
            m0 = mask[iy0:iy1, ix0:ix1] == ident
            alone = int(np.count_nonzero(m0))
            if alone:  # the rasterised pixels may reach half a pixel past the shape: keep them in the amodal box
                rows = np.flatnonzero(m0.any(1))
                cols = np.flatnonzero(m0.any(0))
                x0, x1 = min(x0, float(ix0 + cols[0])), max(x1, float(ix0 + cols[-1] + 1))
                y0, y1 = min(y0, float(iy0 + rows[0])), max(y1, float(iy0 + rows[-1] + 1))
        wp = item[3]
        dist_c = float(np.linalg.norm(np.asarray([wp[0], wp[1], 0.0]) - C))
        if depth is not None:
            _depth_fill(depth, mask, ident, x0, y0, x1, y1, dist_c, W, H)
        hd = item[5] if len(item) > 5 else None
        records.append((ident, cat, (x0, y0, x1, y1), (ix0, iy0, ix1, iy1), alone, wp, dist_c, hd))
    objects = []
    for ident, cat, (x0, y0, x1, y1), (ix0, iy0, ix1, iy1), alone, wp, dist_c, hd in records:
        bw, bh = x1 - x0, y1 - y0
        inter = max(0.0, min(x1, W) - max(x0, 0.0)) * max(0.0, min(y1, H) - max(y0, 0.0))
        trunc = 1.0 - inter / max(bw * bh, 1e-9)
        if trunc >= 1.0 or alone == 0:
            continue
        m = mask[iy0:iy1, ix0:ix1] == ident
        hidden = 0
        if hide is not None:
            h = m & hide[iy0:iy1, ix0:ix1]
            hidden = int(np.count_nonzero(h))
            if hidden:
                m &= ~h
        vis = int(np.count_nonzero(m))
        vb = None
        if vis:
            rows = np.flatnonzero(m.any(1))
            cols = np.flatnonzero(m.any(0))
            vb = [float(ix0 + cols[0]), float(iy0 + rows[0]), float(ix0 + cols[-1] + 1), float(iy0 + rows[-1] + 1)]
        vf = vis / alone
        objects.append({
            "identity": int(ident),
            "category": cat,
            "bbox_visible": vb,
            "bbox_amodal": [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)],
            "visible_fraction": round(vf, 4),
            "truncation": round(max(0.0, trunc), 4),
            "visibility": round(vf * max(0.0, 1.0 - trunc), 4),
            "visible_pixels": vis,
            "pixel_height": round(bh, 2),
            "world_position": [round(float(wp[0]), 3), round(float(wp[1]), 3), 0.0],
            "distance": round(dist_c, 3),
            "heading": None if hd is None else round(math.degrees(hd) % 360.0, 2),
        })
        if hide is not None:
            objects[-1]["fault_hidden_pixels"] = hidden
    # person headings
    for o in objects:
        if o["category"] == "person" and o["heading"] is None:
            st = pst.get(o["identity"])
            if st is not None:
                o["heading"] = round(math.degrees(st[2]) % 360.0, 2)
    objects.sort(key=lambda o: o["identity"])
    if hide is not None:
        mask[hide] = 0
    hl = []
    for lx, ly, lr, ident in lights_all:
        ix, iy = int(lx), int(ly)
        if 0 <= ix < W and 0 <= iy < H and mask[iy, ix] == ident:
            hl.append((round(lx, 2), round(ly, 2), round(lr, 2), ident))
    return RenderResult(img, mask, objects, hl, depth)


def _depth_fill(depth, mask, ident, x0, y0, x1, y1, d, W, H):
    ix0, iy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    ix1, iy1 = min(W, int(math.ceil(x1)) + 1), min(H, int(math.ceil(y1)) + 1)
    if ix1 > ix0 and iy1 > iy0:
        np.copyto(depth[iy0:iy1, ix0:ix1], np.float32(d), where=mask[iy0:iy1, ix0:ix1] == ident)


def _draw_shadows(img, cam: Camera, light: Light, lit: _Lighting, people_pts, solids, vst, vehicles, W, H, E):
    sun_on = light.shadows and lit.s[2] > 0.05 and float(lit.sun.mean()) > 0.05
    sm = np.zeros((H, W), np.uint8)
    x0, y0, x1, y1 = W, H, 0, 0
    polys_ao = []
    polys_cast = []
    s = lit.s
    if people_pts:
        Pp = np.stack(people_pts)  # N x 37 x 3
        n = len(Pp)
        ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        ring = np.stack([0.32 * np.cos(ang), 0.32 * np.sin(ang), np.zeros(8)], -1)
        ao = Pp[:, 34][:, None, :] + ring[None] * (Pp[:, 35, 2] / 1.75)[:, None, None]
        sets = [ao]
        if sun_on:
            low = Pp[:, [5, 6, 7, 9, 10, 11, 18, 19, 20, 21]]
            up = Pp[:, [18, 19, 20, 21, 22, 23, 24, 25, 0, 35]]
            arms = Pp[:, [12, 13, 14, 15, 16, 17]]
            sets += [_ground_shadow(low, s), _ground_shadow(up, s), _ground_shadow(arms, s)]
        counts = [q.shape[1] for q in sets]
        allP = np.concatenate([q.reshape(-1, 3) for q in sets])
        uvA, depA = cam.project(allP)
        off = 0
        for si, c in enumerate(counts):
            u = uvA[off:off + n * c].reshape(n, c, 2)
            d = depA[off:off + n * c].reshape(n, c)
            off += n * c
            for i in range(n):
                if d[i].min() < _NEAR:
                    continue
                if u[i, :, 0].max() < 0 or u[i, :, 0].min() > W or u[i, :, 1].max() < 0 or u[i, :, 1].min() > H:
                    continue
                pts = cv2.convexHull(np.rint(u[i] * _ONE - 8).astype(np.int32))
                (polys_ao if si == 0 else polys_cast).append(pts)
    for v in vehicles:
        x, y, hd, _ = vst[v.identity]
        if abs(x) > E + 3 or abs(y) > E + 3:
            continue
        fp = _box_corners(x, y, hd, 0.0, 0.0, v.length + 0.3, v.length + 0.3, v.width * 0.5 + 0.15,
                          v.width * 0.5 + 0.15)[:4]
        uv, dep = cam.project(fp)
        if dep.min() >= _NEAR and not (uv[:, 0].max() < 0 or uv[:, 0].min() > W or uv[:, 1].max() < 0
                                       or uv[:, 1].min() > H):
            polys_ao.append(cv2.convexHull(np.rint(uv * _ONE - 8).astype(np.int32)))
    if sun_on:
        polys_cast += _shadow_polys(cam, solids, s)
    if not polys_ao and not polys_cast:
        return
    for pts in polys_ao:
        cv2.fillConvexPoly(sm, pts, 110, _AA, _SHIFT)
    for pts in polys_cast:
        cv2.fillConvexPoly(sm, pts, 255, _AA, _SHIFT)
    for pts in polys_ao + polys_cast:
        a = pts.reshape(-1, 2)
        x0 = min(x0, int(a[:, 0].min()) >> _SHIFT)
        x1 = max(x1, (int(a[:, 0].max()) >> _SHIFT) + 2)
        y0 = min(y0, int(a[:, 1].min()) >> _SHIFT)
        y1 = max(y1, (int(a[:, 1].max()) >> _SHIFT) + 2)
    pad = 4
    x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
    x1, y1 = min(W, x1 + pad), min(H, y1 + pad)
    if x1 <= x0 or y1 <= y0:
        return
    reg = sm[y0:y1, x0:x1]
    sig = max(0.6, light.shadow_softness * W / 640.0)
    k = 2 * int(math.ceil(2 * sig)) + 1
    reg = cv2.GaussianBlur(reg, (k, k), sig)
    g = lit.amb + lit.sun * max(lit.s[2], 0.0)
    ksun = float(np.mean(lit.sun * max(lit.s[2], 0.0) / np.maximum(g, 1e-6))) if sun_on else 0.0
    kk = max(ksun, 0.45)
    f = cv2.convertScaleAbs(reg, alpha=-kk, beta=255.0)
    sub = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = cv2.multiply(sub, cv2.merge([f, f, f]), scale=1.0 / 255.0)
