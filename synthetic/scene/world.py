"""The static world: a ground surface, its surroundings and occluding props.

The world is a square of side ``size`` metres centred on the origin. The
ground (``z = 0``) is one of :data:`SURFACES`; outdoors it is closed by
building facades on the square's border (with a gap where a road leaves the
square) and the sky above; ``indoor`` is a closed hall with walls and a
ceiling. Everything is shaded per pixel from the exact back-projection of
each pixel (:meth:`World.background`), so textures are perspective-correct,
consistent between cameras and anti-aliased by their pixel footprint.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synthetic.texture import periodic_distance, stripe_coverage

from .camera import Camera

__all__ = ["SURFACES", "PROP_KINDS", "Prop", "World", "Background", "IMAGE_EXTENSIONS", "list_background_images"]

SURFACES = ("pavement", "road", "grass", "indoor", "platform")
PROP_KINDS = ("pole", "bench", "bin", "tree", "pillar", "parked_vehicle")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: default prop counts per surface
DEFAULT_PROPS = {
    "road": {"pole": 4, "bench": 2, "bin": 3, "tree": 4, "parked_vehicle": 3},
    "pavement": {"pole": 3, "bench": 3, "bin": 3, "tree": 4, "parked_vehicle": 2},
    "grass": {"pole": 2, "bench": 3, "bin": 2, "tree": 6},
    "indoor": {"pillar": 4, "bench": 3, "bin": 3},
    "platform": {"pillar": 4, "bench": 3, "bin": 2, "pole": 0},
}

_SKY_T, _SKY_C = 32, 8  # sky LUT index: 32 gradient x 8 cloud levels
ROAD_LANE = 3.3
ROAD_PARK = 2.2
ROAD_HALF = ROAD_LANE + ROAD_PARK


def list_background_images(folder) -> list[Path]:
    p = Path(folder)
    if not p.is_dir():
        raise ValueError(f"background_dir {str(p)!r} is not a folder")
    files = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"background_dir {str(p)!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


@dataclass
class Prop:
    """A static occluder standing on the ground at (x, y)."""

    kind: str
    x: float
    y: float
    yaw: float = 0.0
    size: float = 1.0       # height in metres (pole, tree, pillar) or a scale factor
    colour: tuple = (80, 80, 80)
    identity: int = 0       # negative in the instance mask

    def to_dict(self) -> dict:
        return {"kind": self.kind, "x": round(self.x, 3), "y": round(self.y, 3), "yaw": round(self.yaw, 2),
                "size": round(self.size, 3), "colour": list(self.colour), "identity": self.identity}


@dataclass
class Background:
    """Per-camera cached background layers (read-only arrays)."""

    albedo: np.ndarray          # H x W x 3 uint8 (sky pixels: LUT index in every channel)
    sky: np.ndarray | None      # H x W x 3 bool (sky pixels), None when there is no sky
    sky_rows: int               # sky pixels lie in rows [0, sky_rows)
    emissive: np.ndarray | None  # H x W x 3 uint8 light added at night (lamps, windows)
    depth: np.ndarray           # H x W float32 distance to the camera (metres), 1e4 for sky
    ground: np.ndarray          # H x W bool: pixel sees the ground plane


# --------------------------------------------------------------------------
# procedural helpers (vectorised)
_cov = stripe_coverage
_pdist = periodic_distance


def _hash01(i, j, salt: int = 0):
    """Deterministic pseudo-random value in [0, 1) per integer cell (i, j)."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float32) * (1.0 / 65536.0)


def _fade(fp, size):
    """1 where a feature of ``size`` metres is well resolved, 0 where it is sub-pixel."""
    return np.clip(2.0 - 2.0 * fp / (size * 0.5), 0.0, 1.0)


class _Tile:
    """Tileable noise texture sampled in world coordinates."""

    def __init__(self, rng: np.random.Generator, n: int = 64, blur: float = 0.8):
        t = rng.standard_normal((n, n)).astype(np.float32)
        pad = n // 4
        t = np.pad(t, pad, mode="wrap")  # blur with periodic borders: the tile stays seamless
        t = cv2.GaussianBlur(t, (0, 0), blur)[pad:pad + n, pad:pad + n].copy()
        t /= max(float(t.std()), 1e-6)
        self.t, self.n = t, n

    def sample(self, X, Y, metres: float):
        k = self.n / metres
        mx = (X * k).astype(np.float32)
        mx -= np.floor(mx * (1.0 / self.n)) * self.n
        my = (Y * k).astype(np.float32)
        my -= np.floor(my * (1.0 / self.n)) * self.n
        return cv2.remap(self.t, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _u8(rng, lo, hi, nd=3):
    return round(float(rng.uniform(lo, hi)), nd)


# --------------------------------------------------------------------------
class World:
    """Surface layout, surroundings, props and lamps of one scene.

    ``props``: ``None`` (defaults for the surface), a dict of counts per kind
    (:data:`PROP_KINDS`) or a list of explicit prop dicts
    (``{"kind": "bench", "x": 1.0, "y": 2.0, "yaw": 90}``). Parked vehicles are
    returned by :meth:`parked_vehicle_spots` and become labelled, static
    vehicle agents.
    """

    def __init__(self, surface: str, size: float, rng: np.random.Generator, props=None,
                 background_images: list | None = None, ceiling: float = 14.0, keep_clear=()):
        if surface not in SURFACES:
            raise ValueError(f"surface must be one of {SURFACES}, got {surface!r}")
        self.surface = surface
        self.size = float(size)
        self.E = self.size * 0.5
        self.ceiling = float(ceiling)
        self.background_images = list(background_images or [])
        self.params: dict = {"surface": surface, "size": self.size}
        self._bg_cache: dict = {}
        self._tiles = [_Tile(rng), _Tile(rng, blur=1.6)]
        p = self.params
        E = self.E
        if surface == "road":
            p["sidewalk_width"] = _u8(rng, 3.0, 6.0)
            p["crosswalk_x"] = _u8(rng, -0.3 * E, 0.3 * E)
            p["centre_dashed"] = bool(rng.random() < 0.7)
            p["tile_m"] = _u8(rng, 0.35, 0.7)
        elif surface == "pavement":
            p["tile_m"] = _u8(rng, 0.3, 0.8)
            p["herringbone"] = bool(rng.random() < 0.3)
            p["parking_y"] = _u8(rng, -0.6 * E, -0.3 * E)
        elif surface == "grass":
            p["path_y"] = _u8(rng, -0.3 * E, 0.3 * E)
            p["path_half_width"] = _u8(rng, 1.2, 2.5)
            p["mowing_m"] = _u8(rng, 1.0, 2.0)
        elif surface == "indoor":
            p["tile_m"] = _u8(rng, 0.5, 1.0)
            p["floor_alt"] = bool(rng.random() < 0.5)
        elif surface == "platform":
            p["edge_y"] = _u8(rng, 0.15 * E, 0.35 * E)
            p["tile_m"] = _u8(rng, 0.4, 0.8)
        cols = {
            "asphalt": (90, 90, 92), "paving": (152, 148, 140), "grass": (72, 104, 50),
            "floor": (196, 190, 180), "floor2": (168, 160, 150), "concrete": (168, 165, 158),
            "wall": (205, 202, 195),
        }
        for k, c in cols.items():
            j = rng.uniform(-12, 12, 4)
            p[f"{k}_rgb"] = [int(np.clip(v + j[0] + 0.5 * j[i + 1], 0, 255)) for i, v in enumerate(c)]
        # facades (outdoor) or hall walls (indoor), one list of buildings per wall
        self.walls = []
        for w in range(4):
            segs = []
            a = -E
            while a < E - 1e-6:
                width = float(rng.uniform(8.0, 22.0))
                b = min(E, a + width)
                if E - b < 4.0:
                    b = E
                segs.append({
                    "a0": a, "a1": b,
                    "height": float(rng.uniform(7.0, 28.0)) if surface != "indoor" else self.ceiling,
                    "colour": _facade_colour(rng) if surface != "indoor" else p["wall_rgb"],
                    "floor_h": float(rng.uniform(2.9, 3.6)),
                    "win_dx": float(rng.uniform(1.8, 3.2)),
                    "win_w": float(rng.uniform(0.8, 1.5)),
                    "win_h": float(rng.uniform(1.1, 1.8)),
                    "shop": bool(rng.random() < 0.5),
                    "salt": int(rng.integers(1 << 30)),
                })
                a = b
            self.walls.append(segs)
        self.params["walls"] = [[{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}
                                 for s in segs] for segs in self.walls]
        self._keep_clear = [(float(x), float(y)) for x, y in keep_clear]
        self.props = self._make_props(rng, props)
        self.params["props"] = [q.to_dict() for q in self.props]
        self.lamps = []
        for q in self.props:
            if q.kind == "pole":
                ax, ay = math.cos(math.radians(q.yaw)), math.sin(math.radians(q.yaw))
                self.lamps.append((q.x + 1.1 * ax, q.y + 1.1 * ay, q.size))
        if surface == "indoor":
            n = 4
            for i in range(n):
                for j in range(n):
                    self.lamps.append((-E + (i + 0.5) * 2 * E / n, -E + (j + 0.5) * 2 * E / n, self.ceiling))

    # ------------------------------------------------------------ layout
    def _on_walkable(self, x, y) -> bool:
        E = self.E - 1.0
        if abs(x) > E or abs(y) > E:
            return False
        if self.surface == "road":
            sw = self.params["sidewalk_width"]
            return ROAD_HALF + 0.3 <= abs(y) <= ROAD_HALF + sw
        if self.surface == "platform":
            return y <= self.params["edge_y"] - 0.9
        return True

    def walkable_area(self) -> float:
        E = self.E - 1.0
        if self.surface == "road":
            return 2 * (2 * E) * (self.params["sidewalk_width"] - 0.3)
        if self.surface == "platform":
            return (2 * E) * (self.params["edge_y"] - 0.9 + E)
        return (2 * E) ** 2

    def random_walk_point(self, rng: np.random.Generator) -> tuple[float, float]:
        E = self.E - 1.0
        if self.surface == "road":
            sw = self.params["sidewalk_width"]
            s = 1.0 if rng.random() < 0.5 else -1.0
            return float(rng.uniform(-E, E)), float(s * rng.uniform(ROAD_HALF + 0.3, ROAD_HALF + sw))
        if self.surface == "platform":
            return float(rng.uniform(-E, E)), float(rng.uniform(-E, self.params["edge_y"] - 0.9))
        return float(rng.uniform(-E, E)), float(rng.uniform(-E, E))

    def random_walk_route(self, rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
        pts = [self.random_walk_point(rng) for _ in range(n)]
        if self.surface == "grass" and rng.random() < 0.6:
            # many walkers follow the path
            py = self.params["path_y"]
            hw = self.params["path_half_width"]
            pts = [(x, py + float(rng.uniform(-hw, hw)) * 0.8) for x, _ in pts]
        if self.surface != "road":
            return pts
        out = [pts[0]]
        cx = self.params["crosswalk_x"]
        for p in pts[1:]:
            if (p[1] > 0) != (out[-1][1] > 0):  # cross the road at the zebra crossing
                y0, y1 = out[-1][1], p[1]
                xo = cx + float(rng.uniform(-1.5, 1.5))
                out.append((xo, math.copysign(ROAD_HALF + 0.5, y0)))
                out.append((xo, math.copysign(ROAD_HALF + 0.5, y1)))
            out.append(p)
        return out

    def random_drive_route(self, rng: np.random.Generator, category: str):
        """Waypoints and trajectory mode for a moving vehicle (road lanes, parking-lot aisle, park path)."""
        E = self.E
        if self.surface == "road":
            d = 1.0 if rng.random() < 0.5 else -1.0
            y = -d * ROAD_LANE * 0.5 if category != "bike" else -d * (ROAD_LANE - 0.5)
            L = E + 60.0
            return [(-d * L, y), (d * L, y)], "wrap"
        if self.surface in ("indoor", "platform"):
            raise ValueError(f"moving vehicles are not supported on surface {self.surface!r} (use num_vehicles=0)")
        x0, x1 = -E + 4.0 + float(rng.uniform(0, 3)), E - 4.0 - float(rng.uniform(0, 3))
        if self.surface == "pavement":  # circulate around the parking lot's aisle
            y0 = self.params["parking_y"]
            return [(x0, y0 - 1.2), (x1, y0 - 1.2), (x1, y0 + 1.2), (x0, y0 + 1.2)], "loop"
        # grass: (bikes) ride along the path and back
        y0 = self.params["path_y"]
        return [(x0, y0 - 0.6), (x1, y0 - 0.6), (x1, y0 + 0.6), (x0, y0 + 0.6)], "loop"

    def random_parking_spot(self, rng: np.random.Generator):
        E = self.E
        if self.surface == "road":
            s = 1.0 if rng.random() < 0.5 else -1.0
            return float(rng.uniform(-E + 4, E - 4)), s * (ROAD_LANE + ROAD_PARK * 0.5), (0.0 if s < 0 else 180.0)
        if self.surface == "pavement":
            y = self.params["parking_y"]
            x = math.floor(float(rng.uniform(-E + 4, E - 4)) / 2.6) * 2.6 + 1.3
            return x, y + (2.6 if rng.random() < 0.5 else -2.6), (90.0 if rng.random() < 0.5 else 270.0)
        if self.surface == "grass":
            return float(rng.uniform(-E + 4, E - 4)), float(rng.choice([-E + 3.0, E - 3.0])), 0.0
        return None

    # ------------------------------------------------------------ props
    def _make_props(self, rng: np.random.Generator, spec) -> list[Prop]:
        props: list[Prop] = []
        if isinstance(spec, (list, tuple)):
            for d in spec:
                if isinstance(d, Prop):
                    d = d.to_dict()
                q = Prop(kind=d["kind"], x=float(d["x"]), y=float(d["y"]), yaw=float(d.get("yaw", 0.0)),
                         size=float(d.get("size", _default_size(d["kind"]))),
                         colour=tuple(d.get("colour", _default_colour(d["kind"]))))
                props.append(q)
        else:
            counts = dict(DEFAULT_PROPS[self.surface]) if spec is None else dict(spec)
            for kind in PROP_KINDS:
                n = int(counts.get(kind, 0))
                if kind == "parked_vehicle":
                    continue  # agents, see Scene
                for _ in range(n):
                    for _try in range(30):
                        x, y, yaw = self._prop_spot(rng, kind)
                        clear = 4.0 if kind in ("tree", "pole", "pillar") else 2.0
                        if (all(math.hypot(x - q.x, y - q.y) > 2.0 for q in props)
                                and all(math.hypot(x - cx, y - cy) > clear for cx, cy in self._keep_clear)):
                            break
                    size = _default_size(kind) * float(rng.uniform(0.85, 1.2))
                    props.append(Prop(kind, round(x, 3), round(y, 3), round(yaw, 2), round(size, 3),
                                      _jitter(_default_colour(kind), rng)))
        for i, q in enumerate(props):
            q.identity = -(i + 1)
        return props

    def _prop_spot(self, rng, kind):
        E = self.E - 1.5
        x = float(rng.uniform(-E, E))
        y = float(rng.uniform(-E, E))
        yaw = float(rng.choice([0.0, 90.0, 180.0, 270.0]))
        if self.surface == "road":
            s = 1.0 if rng.random() < 0.5 else -1.0
            if kind in ("pole", "tree", "bin"):
                y = s * (ROAD_HALF + 0.6)
                yaw = 270.0 if s > 0 else 90.0  # lamp arm over the road
            else:
                y = s * (ROAD_HALF + self.params["sidewalk_width"] - 0.6)
                yaw = 270.0 if s > 0 else 90.0
        elif self.surface == "platform":
            ey = self.params["edge_y"]
            if kind == "pillar":
                y = (ey - E) * 0.5
            else:
                y = float(rng.uniform(-E, ey - 2.0))
            yaw = 90.0
        elif kind == "pole":
            yaw = float(rng.uniform(0, 360))
        return x, y, yaw

    # ------------------------------------------------------------ background
    def background(self, cam: Camera, image_index: int = 0) -> Background:
        """Cached per-camera background layers (computed once per camera)."""
        key = (repr(sorted(cam.to_dict().items())), image_index)
        bg = self._bg_cache.get(key)
        if bg is None:
            bg = self._render_background(cam, image_index)
            self._bg_cache[key] = bg
        return bg

    def _render_background(self, cam: Camera, image_index: int) -> Background:
        W, H = cam.resolution
        E = self.E
        vs, us = np.mgrid[0:H, 0:W].astype(np.float64)
        d = cam.pixel_rays(us + 0.5, vs + 0.5)  # H x W x 3, camera z = 1
        dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
        Cx, Cy, Cz = cam.x, cam.y, cam.height
        norm = np.sqrt(dx * dx + dy * dy + dz * dz)
        far = 400.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t_g = np.where(dz < -1e-9, -Cz / dz, np.inf)
            t_g = np.where(t_g * norm > far, np.inf, t_g)
            # walls of the square (the camera stands inside it)
            tx = np.where(np.abs(dx) > 1e-12, (np.sign(dx) * E - Cx) / dx, np.inf)
            ty = np.where(np.abs(dy) > 1e-12, (np.sign(dy) * E - Cy) / dy, np.inf)
        t_w = np.minimum(tx, ty)
        wall_x = tx <= ty  # hits a wall at x = +-E (coordinate along it: y)
        hx = Cx + t_w * dx
        hy = Cy + t_w * dy
        hz = Cz + t_w * dz
        a = np.where(wall_x, hy, hx)
        a = np.where(np.isfinite(a), a, 0.0)
        hz = np.where(np.isfinite(hz), hz, -1.0)
        widx = np.where(wall_x, np.where(dx > 0, 0, 1), np.where(dy > 0, 2, 3))
        # building height per pixel
        wh = np.zeros((H, W))
        seg = np.zeros((H, W), np.int64)
        for w in range(4):
            segs = self.walls[w]
            bounds = np.array([s["a1"] for s in segs])
            heights = np.array([s["height"] for s in segs])
            m = widx == w
            k = np.clip(np.searchsorted(bounds, a[m]), 0, len(segs) - 1)
            seg[m] = k
            wh[m] = heights[k]
        if self.surface == "indoor":
            wh[:] = self.ceiling
        hit_wall = (hz >= 0.0) & (hz <= wh) & np.isfinite(t_w)
        if self.surface == "road":
            gap = wall_x & (np.abs(a) < ROAD_HALF + self.params["sidewalk_width"])
            hit_wall &= ~gap
        t_c = np.full((H, W), np.inf)
        if self.surface == "indoor":
            with np.errstate(divide="ignore", invalid="ignore"):
                t_c = np.where(dz > 1e-9, (self.ceiling - Cz) / dz, np.inf)
        t_wall = np.where(hit_wall, t_w, np.inf)
        t = np.minimum(np.minimum(t_g, t_wall), t_c)
        is_ground = np.isfinite(t_g) & (t_g <= t)
        is_wall = ~is_ground & np.isfinite(t_wall) & (t_wall <= t)
        is_ceil = ~is_ground & ~is_wall & np.isfinite(t_c)
        is_sky = ~(is_ground | is_wall | is_ceil)
        dist = np.where(is_sky, 1e4, t * norm).astype(np.float32)

        out = np.zeros((H, W, 3), np.float32)
        emis = np.zeros((H, W, 3), np.float32)
        if self.background_images:
            out[:] = self._photo(cam, image_index)
            is_sky[:] = False
        else:
            # ---- ground
            if is_ground.any():
                tg = np.where(is_ground, t_g, 1.0)
                X = (Cx + tg * dx).astype(np.float32)
                Y = (Cy + tg * dy).astype(np.float32)
                fpx = (np.abs(np.gradient(X, axis=1)) + np.abs(np.gradient(X, axis=0))).astype(np.float32)
                fpy = (np.abs(np.gradient(Y, axis=1)) + np.abs(np.gradient(Y, axis=0))).astype(np.float32)
                fpx = np.clip(fpx, 1e-4, 50.0)
                fpy = np.clip(fpy, 1e-4, 50.0)
                ge = np.zeros_like(emis)
                g = self._ground(X, Y, fpx, fpy, ge)
                emis[is_ground] += ge[is_ground]
                haze = (1.0 - np.exp(-dist / 350.0))[..., None]
                g = g * (1.0 - haze) + np.array([178.0, 182.0, 188.0], np.float32) * haze
                out[is_ground] = g[is_ground]
            # ---- walls / facades
            if is_wall.any():
                we = np.zeros_like(emis)
                col = self._walls(a, hz, widx, seg, wall_x, dist, we, W)
                out[is_wall] = col[is_wall]
                emis[is_wall] += we[is_wall]
            if is_ceil.any():
                tc = np.where(is_ceil, t_c, 1.0)
                cX = (Cx + tc * dx).astype(np.float32)
                cY = (Cy + tc * dy).astype(np.float32)
                ceil = np.full((H, W, 3), 222.0, np.float32)
                fp = (np.abs(np.gradient(np.where(is_ceil, cX, 0), axis=1)) + 0.02).astype(np.float32)
                panel = _cov(_pdist(cX, 2 * E / 4, -E + E / 4), 1.2, fp) * _cov(_pdist(cY, 2 * E / 4, -E + E / 4),
                                                                                  2.4, fp)
                grid = np.maximum(_cov(_pdist(cX, 0.6), 0.02, fp), _cov(_pdist(cY, 0.6), 0.02, fp))
                ceil *= (1.0 - 0.2 * grid)[..., None]
                ceil = ceil * (1 - panel[..., None]) + 250.0 * panel[..., None]
                emis[is_ceil] += (panel[..., None] * 255.0)[is_ceil]
                out[is_ceil] = ceil[is_ceil]
            # ---- sky: LUT index (gradient x clouds)
            if is_sky.any():
                el = np.degrees(np.arcsin(np.clip(dz / norm, -1.0, 1.0)))
                tg = np.clip(1.0 - el / 60.0, 0.0, 1.0)
                az = np.arctan2(dy, dx)
                cl = self._tiles[1].sample((az * 8.0).astype(np.float32), (el * 0.25).astype(np.float32), 14.0)
                cl = np.clip((cl - 0.2) * 0.5, 0.0, 1.0) * np.clip(el / 3.0, 0.0, 1.0)
                idx = np.round(tg * (_SKY_T - 1)) * _SKY_C + np.round(cl * (_SKY_C - 1))
                out[is_sky] = idx[is_sky][:, None]
        albedo = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        sky = None
        sky_rows = 0
        if is_sky.any():
            rows = np.nonzero(is_sky.any(axis=1))[0]
            sky_rows = int(rows.max()) + 1
            sky = np.repeat(is_sky[:sky_rows, :, None], 3, axis=2)
            sky.setflags(write=False)
        em = None
        if emis.max() > 0.5:
            em = np.clip(emis + 0.5, 0, 255).astype(np.uint8)
            em.setflags(write=False)
        for arr in (albedo, dist, is_ground):
            arr.setflags(write=False)
        return Background(albedo, sky, sky_rows, em, dist, is_ground)

    def _photo(self, cam: Camera, image_index: int) -> np.ndarray:
        W, H = cam.resolution
        path = self.background_images[image_index % len(self.background_images)]
        data = np.fromfile(str(path), np.uint8)
        im = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if im is None:
            raise ValueError(f"background image {str(path)!r} could not be read")
        im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        h, w = im.shape[:2]
        s = max(W / w, H / h)
        nw, nh = max(W, int(math.ceil(w * s))), max(H, int(math.ceil(h * s)))
        im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x0, y0 = (nw - W) // 2, (nh - H) // 2
        return im[y0:y0 + H, x0:x0 + W].astype(np.float32)

    def _ground(self, X, Y, fpx, fpy, emis) -> np.ndarray:
        """Per-pixel ground albedo (float32 H x W x 3)."""
        p = self.params
        s = self.surface
        fp = np.maximum(fpx, fpy)
        n1 = self._tiles[0].sample(X, Y, 3.0) * _fade(fp, 3.0 / 64 * 2)
        n2 = self._tiles[1].sample(X, Y, 23.0)
        shade = 1.0 + 0.05 * n2
        H_, W_ = X.shape

        def col(name):
            return np.array(p[f"{name}_rgb"], np.float32)

        def tiles(base, tile, grout=0.025, var=0.06, salt=1):
            i = np.floor(X / tile)
            j = np.floor(Y / tile)
            v = (_hash01(i, j, salt) - 0.5) * 2.0 * var * _fade(fp, tile)
            g = np.maximum(_cov(_pdist(X, tile), grout, fpx), _cov(_pdist(Y, tile), grout, fpy))
            return base[None, None, :] * ((1.0 + v) * (1.0 - 0.35 * g))[..., None]

        if s == "road":
            ay = np.abs(Y)
            asphalt = col("asphalt")[None, None, :] * (1.0 + 0.09 * n1 + 0.05 * n2)[..., None]
            side = tiles(col("paving"), p["tile_m"], 0.03, 0.07)
            on_road = np.clip((ROAD_HALF - ay) / fpy + 0.5, 0.0, 1.0)[..., None]
            img = side * (1 - on_road) + asphalt * on_road
            kerb = _cov(np.abs(ay - ROAD_HALF - 0.08), 0.16, fpy)[..., None]
            img = img * (1 - kerb) + np.array([185, 182, 175], np.float32) * kerb
            white = np.array([226, 226, 220], np.float32)
            c = _cov(ay, 0.14, fpy)
            if p["centre_dashed"]:
                c = c * _cov(_pdist(X, 9.0), 3.0, fpx)
            paint = c
            paint = np.maximum(paint, _cov(np.abs(ay - ROAD_LANE), 0.12, fpy))
            # parking bays
            bays = _cov(_pdist(X, 5.5), 0.1, fpx) * (ay > ROAD_LANE) * (ay < ROAD_HALF)
            paint = np.maximum(paint, bays)
            # zebra crossing
            zx = p["crosswalk_x"]
            zeb = _cov(_pdist(Y, 1.0), 0.5, fpy) * _cov(np.abs(X - zx), 3.0, fpx) * (ay < ROAD_LANE)
            paint = np.maximum(paint, zeb)[..., None] * 0.92
            img = img * (1 - paint) + white * paint
        elif s == "pavement":
            t = p["tile_m"]
            if p["herringbone"]:
                img = tiles(col("paving"), t, 0.02, 0.1)
                img2 = tiles(col("paving") * 0.92, t * 2, 0.02, 0.06, salt=3)
                m = ((np.floor(X / (2 * t)) + np.floor(Y / (2 * t))) % 2)[..., None] * _fade(fp, 2 * t)[..., None]
                img = img * (1 - m) + img2 * m
            else:
                img = tiles(col("paving"), t, 0.025, 0.07)
            img = img * (1.0 + 0.05 * n1)[..., None]
            # parking lot stripes
            py = p["parking_y"]
            lot = (np.abs(Y - py) < 5.2)
            asph = col("asphalt")[None, None, :] * (1.0 + 0.14 * n1)[..., None]
            m = np.clip((5.2 - np.abs(Y - py)) / fpy + 0.5, 0.0, 1.0)[..., None]
            img = img * (1 - m) + asph * m
            st = _cov(_pdist(X, 2.6), 0.1, fpx) * lot * (np.abs(Y - py) > 0.2)
            st = np.maximum(st, _cov(np.abs(Y - py), 0.12, fpy))[..., None] * 0.9
            img = img * (1 - st) + np.array([225, 225, 220], np.float32) * st
        elif s == "grass":
            g = col("grass")
            gr = g[None, None, :] * (1.0 + 0.14 * n1 + 0.12 * n2)[..., None]
            stripes = _cov(_pdist(X, 2 * p["mowing_m"]), p["mowing_m"], fpx) * _fade(fp, p["mowing_m"])
            gr = gr * (1.0 - 0.08 * stripes)[..., None]
            d = np.abs(Y - p["path_y"])
            path = np.clip((p["path_half_width"] - d) / fpy + 0.5, 0.0, 1.0)[..., None]
            pv = col("paving")[None, None, :] * (1.0 + 0.08 * n1)[..., None]
            img = gr * (1 - path) + pv * path
        elif s == "indoor":
            t = p["tile_m"]
            img = tiles(col("floor"), t, 0.012, 0.03)
            if p["floor_alt"]:
                chk = ((np.floor(X / t) + np.floor(Y / t)) % 2)[..., None] * _fade(fp, t)[..., None]
                img = img * (1 - chk) + img * (col("floor2") / col("floor")) * chk
            img = img * (1.0 + 0.03 * n1)[..., None]
        else:  # platform
            ey = p["edge_y"]
            t = p["tile_m"]
            img = tiles(col("concrete"), t, 0.02, 0.05) * (1.0 + 0.05 * n1)[..., None]
            tact = np.clip(0.5 - (np.abs(Y - (ey - 0.55)) - 0.3) / fpy, 0.0, 1.0)[..., None]
            dots = 1.0 - 0.25 * (_cov(_pdist(X, 0.06), 0.03, fpx) * _cov(_pdist(Y, 0.06), 0.03, fpy))[..., None]
            img = img * (1 - tact) + np.array([220, 185, 40], np.float32) * dots * tact
            edge = _cov(np.abs(Y - (ey - 0.1)), 0.2, fpy)[..., None]
            img = img * (1 - edge) + np.array([235, 235, 230], np.float32) * edge
            # track bed beyond the edge: gravel, sleepers, rails
            tr = np.clip((Y - ey) / fpy + 0.5, 0.0, 1.0)[..., None]
            gravel = np.array([100, 94, 88], np.float32) * (1.0 + 0.3 * n1 + 0.1 * n2)[..., None]
            ty = ey + 2.8
            dd = np.abs(Y - ty)
            sl = (_cov(_pdist(X, 0.65), 0.25, fpx) * _cov(dd, 2.6, fpy))[..., None]
            gravel = gravel * (1 - sl) + np.array([78, 66, 56], np.float32) * sl
            rail = np.maximum(_cov(np.abs(dd - 0.7175), 0.07, fpy), 0)[..., None]
            gravel = gravel * (1 - rail) + np.array([170, 170, 175], np.float32) * rail
            img = img * (1 - tr) + gravel * tr
        img *= shade[..., None]
        # lamp pools (emissive, added at night)
        if self.lamps and s != "indoor":
            E_ = np.zeros(X.shape, np.float32)
            for lx, ly, lz in self.lamps:
                r2 = (X - lx) ** 2 + (Y - ly) ** 2 + lz * lz
                E_ += (lz ** 3) / (r2 * np.sqrt(r2))
            emis += img * np.minimum(E_, 1.5)[..., None] * 0.8
        elif s == "indoor":
            E_ = np.zeros(X.shape, np.float32)
            for lx, ly, lz in self.lamps:
                r2 = (X - lx) ** 2 + (Y - ly) ** 2 + lz * lz
                E_ += (lz ** 3) / (r2 * np.sqrt(r2))
            emis += img * np.minimum(E_ * 0.6, 1.0)[..., None] * 0.6
        return img

    def _walls(self, a, hz, widx, seg, wall_x, dist, emis, W) -> np.ndarray:
        """Facade / hall-wall albedo for every pixel (float32 H x W x 3)."""
        Hh, Ww = a.shape
        fp = np.clip(dist * 1.0 / max(W, 1) * 1.8, 1e-3, 50.0).astype(np.float32)
        af = a.astype(np.float32)
        zf = np.clip(hz, 0.0, 200.0).astype(np.float32)
        colour = np.zeros((Hh, Ww, 3), np.float32)
        floor_h = np.ones((Hh, Ww), np.float32)
        win_dx = np.ones((Hh, Ww), np.float32)
        win_w = np.ones((Hh, Ww), np.float32)
        win_h = np.ones((Hh, Ww), np.float32)
        shop = np.zeros((Hh, Ww), bool)
        salt = np.zeros((Hh, Ww), np.int64)
        top = np.zeros((Hh, Ww), np.float32)
        for w in range(4):
            m = widx == w
            if not m.any():
                continue
            segs = self.walls[w]
            k = seg[m]
            colour[m] = np.array([s["colour"] for s in segs], np.float32)[k]
            for name, arr in (("floor_h", floor_h), ("win_dx", win_dx), ("win_w", win_w), ("win_h", win_h),
                              ("height", top)):
                arr[m] = np.array([s[name] for s in segs], np.float32)[k]
            shop[m] = np.array([s["shop"] for s in segs])[k]
            salt[m] = np.array([s["salt"] for s in segs])[k]
        # orientation shading (fixed key light)
        face = np.array([0.92, 0.78, 1.0, 0.85], np.float32)[widx]
        if self.surface == "indoor":
            skirt = _cov(np.abs(zf - 0.06), 0.12, fp)[..., None]
            img = colour * (1 - skirt) + np.array([90, 85, 80], np.float32) * skirt
            # doors
            door = (_cov(_pdist(af, 9.0, 2.0), 1.4, fp) * (zf < 2.2))[..., None]
            img = img * (1 - door) + np.array([120, 90, 60], np.float32) * door
            band = _cov(np.abs(zf - 3.2), 0.5, fp)[..., None]
            img = img * (1 - 0.12 * band)
            return img * face[..., None]
        fl = np.floor(zf / floor_h)
        col_i = np.floor(af / win_dx)
        wx = _cov(_pdist(af, win_dx, 0.0), win_w, fp)
        wz = _cov(_pdist(zf - floor_h * 0.55, floor_h), win_h, fp)
        upper = (fl >= 1) & (zf < top - 0.6)
        win = wx * wz * upper
        ground_floor = (zf < floor_h * 0.95) & shop
        gl = np.where(ground_floor, _cov(_pdist(af, 5.0, 2.5), 4.0, fp) * (zf > 0.3) * (zf < 2.6), 0.0)
        glass = np.array([58, 70, 84], np.float32) * (1.0 + 0.35 * (_hash01(col_i, fl, 7) - 0.5))[..., None]
        img = colour * (1.0 + 0.03 * (_hash01(np.floor(af / 0.4), np.floor(zf / 0.2), 5) - 0.5)
                        * _fade(fp, 0.5))[..., None]
        img = img * (1 - win[..., None]) + glass * win[..., None]
        img = img * (1 - gl[..., None]) + np.array([45, 50, 58], np.float32) * gl[..., None]
        cornice = _cov(np.abs(zf - (top - 0.3)), 0.6, fp)[..., None]
        img = img * (1 - 0.25 * cornice)
        # lit windows at night
        lit = (_hash01(col_i, fl, 11) < 0.35) * win
        emis += (lit[..., None] * np.array([255, 215, 150], np.float32)) * 0.8
        emis += (gl[..., None] * np.array([255, 235, 190], np.float32)) * 0.6
        return img * face[..., None]


_FACADES = (
    (200, 190, 170), (172, 164, 152), (150, 88, 68), (182, 112, 84), (212, 207, 196), (122, 122, 126),
    (98, 108, 118), (178, 166, 132), (226, 220, 204), (142, 132, 122), (196, 176, 150), (160, 150, 160),
)


def _facade_colour(rng) -> list:
    c = _FACADES[int(rng.integers(len(_FACADES)))]
    j = rng.uniform(-10, 10, 4)
    return [int(np.clip(v + j[0] + 0.5 * j[i + 1], 0, 255)) for i, v in enumerate(c)]


def _default_size(kind: str) -> float:
    return {"pole": 6.0, "bench": 1.0, "bin": 1.0, "tree": 6.0, "pillar": 5.0, "parked_vehicle": 1.0}.get(kind, 1.0)


def _default_colour(kind: str) -> tuple:
    return {"pole": (70, 72, 75), "bench": (120, 85, 55), "bin": (50, 70, 55), "tree": (60, 100, 45),
            "pillar": (185, 182, 175), "parked_vehicle": (150, 150, 150)}.get(kind, (100, 100, 100))


def _jitter(c, rng):
    j = rng.uniform(-10, 10, 3)
    return tuple(int(np.clip(v + d, 0, 255)) for v, d in zip(c, j))


def check_number(name, v, lo=None, hi=None, integer=False):
    if integer:
        ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
    else:
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))
    if not ok:
        raise ValueError(f"{name} must be {'an int' if integer else 'a finite number'}, got {v!r}")
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v!r}")
    return v
