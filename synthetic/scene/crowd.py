"""Collision avoidance for people on foot: a small deterministic crowd simulation.

A person's :class:`~synthetic.scene.agents.Trajectory` is the plan (a route
walked at a preferred speed); :class:`CrowdSim` computes where people actually
are. Each route is first re-planned around props and parked vehicles
(:func:`plan_route`: waypoints inside an obstacle move out, legs crossing one
go round it through its corners). From ``t0`` everyone is then integrated at
fixed sub-steps (at most :data:`DT_MAX` s, at most :data:`MAX_SUBSTEPS` per
frame interval):

* each walker steers towards a point :data:`LOOKAHEAD` m ahead on its route;
  the point waits while the walker is held up, so detours rejoin the route;
* nearby people repel (social forces, stronger for people ahead) and push a
  walker to its right when someone is ahead, so head-on encounters resolve;
  props and parked vehicles (oriented boxes, :func:`obstacle_boxes`) repel and
  the walker slides along them;
* then constraints are enforced: overlapping ground footprints (discs of
  :func:`footprint_radius`) are pushed apart and footprints are pushed out of
  every obstacle box, last, so nobody walks through a prop.

Standing people are immovable obstacles once the start positions are cleared
(people generated inside a prop or on top of each other are moved apart at
``t0``). Cyclists and vehicles keep their planned trajectories.

The work per sub-step is capped: neighbours come from a uniform grid and at
most :data:`MAX_NEIGHBOURS` pairs per person (the nearest) are kept, and at
most :data:`MAX_OBSTACLES_PER_CELL` obstacles per 2-m cell are considered.
The result depends only on the people, world and frame times, so every frame
is reproducible whatever order frames are asked for in (states are cached and
checkpointed; an earlier frame is re-simulated from the last checkpoint).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

__all__ = ["CrowdSim", "footprint_radius", "obstacle_boxes", "box_signed_distance", "plan_route", "DT_MAX",
           "MAX_SUBSTEPS", "MAX_NEIGHBOURS", "MAX_OBSTACLES_PER_CELL"]

DT_MAX = 0.1                 # s, longest sub-step
MAX_SUBSTEPS = 20            # sub-steps per frame interval at most (very low frame rates get longer steps)
MAX_NEIGHBOURS = 12          # person pairs kept per person on average (the nearest)
MAX_OBSTACLES_PER_CELL = 16
NEIGHBOUR_RADIUS = 2.0       # m
LOOKAHEAD = 1.2              # m ahead on the route
TAU = 0.5                    # s, relaxation to the preferred velocity
REPULSION = 2.5              # m/s^2 between people at contact
REPULSION_RANGE = 0.3        # m
ANISOTROPY = 0.35            # weight of people behind (1 for people ahead)
SIDESTEP = 1.0               # lateral push (fraction of the repulsion) when someone is ahead
OBSTACLE_REPULSION = 3.0     # m/s^2 at contact
OBSTACLE_RANGE = 0.2         # m
MAX_SPEED_FACTOR = 1.3       # x preferred speed
PROJECTION_ITERS = 3
INIT_ITERS = 12
_CELL_OBS = 2.0              # m, obstacle grid cell
_BRUTE_FORCE = 48            # up to this many people, neighbours by testing every pair
_MAX_CHECKPOINTS = 256


def footprint_radius(height: float) -> float:
    """Radius (m) of a person's ground footprint (shoulder half-width) for body ``height`` (m)."""
    return 0.2 * float(height) / 1.75


def obstacle_boxes(world, vehicles=()) -> np.ndarray:
    """Ground footprints of the world's props and of parked vehicles: M x 5 ``(x, y, yaw_rad, half_length,
    half_width)`` oriented boxes (half_length along ``yaw``), matching the rendered shapes."""
    out = []
    for q in world.props:
        yaw = math.radians(q.yaw)
        sc = q.size
        if q.kind == "pole":
            out.append((q.x, q.y, 0.0, 0.08, 0.08))
        elif q.kind == "tree":
            out.append((q.x, q.y, 0.0, 0.16, 0.16))
        elif q.kind == "bin":
            out.append((q.x, q.y, yaw, 0.275 * sc, 0.28 * sc))
        elif q.kind == "bench":
            out.append((q.x, q.y, yaw, 0.23 * sc, 0.8 * sc))
        elif q.kind == "pillar":
            out.append((q.x, q.y, yaw, 0.3, 0.3))
    for v in vehicles:
        if getattr(v, "parked", False):
            x, y, hd, _ = v.trajectory.state(0.0)
            out.append((x, y, hd, v.length * 0.5, v.width * 0.5))
    return np.array(out, float).reshape(-1, 5)


def box_signed_distance(px, py, boxes: np.ndarray):
    """Signed distance (m, negative inside) from points to oriented boxes and the outward unit normal.

    ``px``, ``py`` and ``boxes[..., k]`` broadcast together; returns ``(distance, nx, ny)``.
    """
    bx, by, yaw, hl, hw = (boxes[..., k] for k in range(5))
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy = px - bx, py - by
    lx, ly = dx * c + dy * s, -dx * s + dy * c
    ox = lx - np.clip(lx, -hl, hl)
    oy = ly - np.clip(ly, -hw, hw)
    od = np.hypot(ox, oy)
    fx, fy = hl - np.abs(lx), hw - np.abs(ly)
    sx, sy = np.where(lx >= 0, 1.0, -1.0), np.where(ly >= 0, 1.0, -1.0)
    inside = od <= 1e-12
    xface = fx < fy
    inv = 1.0 / np.maximum(od, 1e-12)
    nlx = np.where(inside, np.where(xface, sx, 0.0), ox * inv)
    nly = np.where(inside, np.where(xface, 0.0, sy), oy * inv)
    d = np.where(inside, -np.minimum(fx, fy), od)
    return d, nlx * c - nly * s, nlx * s + nly * c


# --------------------------------------------------------------------------
# route planning around obstacles
def _segment_entry(a, b, box, c: float):
    """Parameter in [0, 1) where segment ``a``-``b`` enters ``box`` grown by ``c`` (None: it does not)."""
    x, y, yaw, hl, hw = box
    cs, sn = math.cos(yaw), math.sin(yaw)
    ax, ay = (a[0] - x) * cs + (a[1] - y) * sn, -(a[0] - x) * sn + (a[1] - y) * cs
    bx, by = (b[0] - x) * cs + (b[1] - y) * sn, -(b[0] - x) * sn + (b[1] - y) * cs
    ex, ey = hl + c, hw + c
    dx, dy = bx - ax, by - ay
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, ax + ex), (dx, ex - ax), (-dy, ay + ey), (dy, ey - ay)):
        if abs(p) < 1e-12:
            if q < 0:
                return None
        else:
            r = q / p
            if p < 0:
                t0 = max(t0, r)
            else:
                t1 = min(t1, r)
            if t0 > t1:
                return None
    return t0 if t1 - t0 > 1e-6 else None


def _box_corners(box, c: float) -> list:
    x, y, yaw, hl, hw = box
    cs, sn = math.cos(yaw), math.sin(yaw)
    return [(x + u * cs - v * sn, y + u * sn + v * cs)
            for u, v in ((hl + c, hw + c), (-hl - c, hw + c), (-hl - c, -hw - c), (hl + c, -hw - c))]


def _first_hit(a, b, boxes, aabb, c: float):
    lo_x, hi_x = min(a[0], b[0]) - c, max(a[0], b[0]) + c
    lo_y, hi_y = min(a[1], b[1]) - c, max(a[1], b[1]) + c
    best, best_t = None, 2.0
    for k, (x0, y0, x1, y1) in enumerate(aabb):
        if x1 < lo_x or x0 > hi_x or y1 < lo_y or y0 > hi_y:
            continue
        tk = _segment_entry(a, b, boxes[k], c)
        if tk is not None and tk < best_t:
            best, best_t = k, tk
    return best


def _out_of_boxes(p, boxes, aabb, c: float):
    """A waypoint inside a (grown) box moves to just outside its nearest face."""
    x, y = p
    for _ in range(2):
        for k, (x0, y0, x1, y1) in enumerate(aabb):
            if not (x0 - c <= x <= x1 + c and y0 - c <= y <= y1 + c):
                continue
            bx, by, yaw, hl, hw = boxes[k]
            cs, sn = math.cos(yaw), math.sin(yaw)
            lx, ly = (x - bx) * cs + (y - by) * sn, -(x - bx) * sn + (y - by) * cs
            fx, fy = hl + c - abs(lx), hw + c - abs(ly)
            if fx <= 0 or fy <= 0:
                continue
            if fx < fy:
                lx = math.copysign(hl + c + 0.05, lx if lx else 1.0)
            else:
                ly = math.copysign(hw + c + 0.05, ly if ly else 1.0)
            x, y = bx + lx * cs - ly * sn, by + lx * sn + ly * cs
    return (x, y)


def plan_route(points, boxes, c: float, max_detours: int = 8):
    """Re-plan a polyline around obstacle boxes (each grown by the clearance ``c``).

    Waypoints inside a box move out of it; a leg crossing a box is replaced by the shortest way round it
    through one or two of its (grown) corners, re-checked against the other boxes, at most ``max_detours``
    times per leg. Returns ``(points, blocked)``: ``blocked[k]`` is True for legs still crossing a box.
    """
    boxes = [tuple(b) for b in np.asarray(boxes, float).reshape(-1, 5).tolist()]
    if not boxes or len(points) < 2:
        return [tuple(p) for p in points], [False] * max(0, len(points) - 1)
    aabb = []
    for x, y, yaw, hl, hw in boxes:
        cs, sn = abs(math.cos(yaw)), abs(math.sin(yaw))
        ex, ey = hl * cs + hw * sn, hl * sn + hw * cs
        aabb.append((x - ex, y - ey, x + ex, y + ey))
    pts = [_out_of_boxes(p, boxes, aabb, c) for p in points]
    out, blocked = [pts[0]], []
    for b in pts[1:]:
        stack = [b]
        n = 0
        while stack:
            a, tgt = out[-1], stack[-1]
            k = _first_hit(a, tgt, boxes, aabb, c)
            via = None
            if k is not None and n < max_detours:
                n += 1
                via = _detour(a, tgt, boxes[k], c)
            if via is None:
                out.append(stack.pop())
                blocked.append(k is not None)
            else:
                stack.extend(reversed(via))
    return out, blocked


def _detour(a, b, box, c: float):
    corners = _box_corners(box, c + 0.05)
    best, best_len = None, math.inf
    for cand in ([0], [1], [2], [3], [0, 1], [1, 0], [1, 2], [2, 1], [2, 3], [3, 2], [3, 0], [0, 3]):
        path = [a] + [corners[k] for k in cand] + [b]
        length = sum(math.hypot(q[0] - p[0], q[1] - p[1]) for p, q in zip(path[:-1], path[1:]))
        if length >= best_len:
            continue
        if any(_segment_entry(p, q, box, c) is not None for p, q in zip(path[:-1], path[1:])):
            continue
        best, best_len = path[1:-1], length
    return best


# --------------------------------------------------------------------------
class CrowdSim:
    """Simulated positions of the people on foot (not riders) of a scene; see the module docstring.

    ``states(frame)`` gives ``{identity: (x, y, heading_rad, distance_walked)}`` at time ``t0 + frame / fps``.
    """

    def __init__(self, people, world, vehicles=(), t0: float = 0.0, fps: float = 5.0,
                 cache_bytes: int = 64 << 20):
        walkers = [p for p in people if p.riding is None]
        self.people = walkers
        self.ids = [p.identity for p in walkers]
        n = len(walkers)
        self.n = n
        self.t0, self.fps = float(t0), float(fps)
        interval = 1.0 / self.fps
        self.substeps = max(1, min(MAX_SUBSTEPS, int(math.ceil(interval / DT_MAX - 1e-9))))
        self.dt = interval / self.substeps
        self.radius = np.array([footprint_radius(p.look.height) for p in walkers], float)
        speed = np.array([p.trajectory.speed if p.trajectory.length > 1e-9 else 0.0 for p in walkers], float)
        self.speed = speed
        self.movable = speed > 0
        self.walk = np.flatnonzero(self.movable)
        E = world.E
        self.limit = E - 0.6
        self.boxes = obstacle_boxes(world, vehicles)
        # routes of the walkers, re-planned around the obstacles; all segments in one array (each walker's
        # arc length offset by base)
        sx0, sy0, sdx, sdy, slen, sst, sblk = [], [], [], [], [], [], []
        self.base = np.zeros(n)
        self.length = np.ones(n)
        self.first = np.zeros(n, np.int64)
        self.last = np.zeros(n, np.int64)
        self.s0 = np.zeros(n)
        acc = 0.0
        for i in self.walk.tolist():
            tr = walkers[i].trajectory
            pts, blocked = plan_route(tr._pts, self.boxes, self.radius[i] + 0.1)
            cum = [0.0]
            for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
                cum.append(cum[-1] + math.hypot(x1 - x0, y1 - y0))
            self.base[i] = acc
            self.length[i] = max(cum[-1], 1e-6)
            self.s0[i] = ((tr.offset + tr.speed * self.t0) % tr.length) / tr.length * self.length[i]
            self.first[i] = len(slen)
            for k in range(len(pts) - 1):
                (x0, y0), (x1, y1) = pts[k], pts[k + 1]
                sx0.append(x0)
                sy0.append(y0)
                sdx.append(x1 - x0)
                sdy.append(y1 - y0)
                slen.append(cum[k + 1] - cum[k])
                sst.append(acc + cum[k])
                sblk.append(blocked[k])
            self.last[i] = len(slen) - 1
            acc += self.length[i] + 1.0
        self._seg = tuple(np.array(a, float) for a in (sx0, sy0, sdx, sdy, slen, sst))
        self._seg_blocked = np.array(sblk, bool)
        # obstacles on a grid
        self._origin = -E - 4.0
        self._ncell_obs = int(math.ceil((2 * E + 8.0) / _CELL_OBS)) + 1
        self._obs_grid = self._build_obstacle_grid()
        self._ncell = int(math.ceil((2 * E + 8.0) / NEIGHBOUR_RADIUS)) + 1
        self._triu = None
        # frame cache and checkpoints
        self._every = 64
        self._cache: OrderedDict = OrderedDict()
        self._cache_max = max(8, int(cache_bytes) // max(1, n * 32))
        self._ckpt: dict = {}
        self._live_f = -1
        self._live = None

    # ------------------------------------------------------------------ public
    def positions(self, frame: int) -> np.ndarray:
        """N x 4 ``(x, y, heading_rad, distance_walked)`` at frame ``frame`` (order of ``ids``)."""
        frame = int(frame)
        if frame < 0:
            raise ValueError(f"frame must be >= 0, got {frame}")
        if frame in self._cache:
            self._cache.move_to_end(frame)
            return self._cache[frame]
        if self._live is None:
            st = self._initial_state()
            self._ckpt[0] = st
            self._put(0, st)
            self._live_f, self._live = 0, st
            if frame == 0:
                return self._cache[0]
        if frame >= self._live_f:
            cur, st = self._live_f, self._live
        else:
            cur = (frame // self._every) * self._every
            st = self._ckpt[cur]
        while cur < frame:
            st = self._advance_frame(st)
            cur += 1
            if cur % self._every == 0 and cur not in self._ckpt:
                self._ckpt[cur] = st
                if len(self._ckpt) > _MAX_CHECKPOINTS:  # long sequences: keep every other checkpoint
                    self._every *= 2
                    self._ckpt = {k: v for k, v in self._ckpt.items() if k % self._every == 0}
            if frame - cur < self._cache_max:
                self._put(cur, st)
        if cur > self._live_f:
            self._live_f, self._live = cur, st
        if frame not in self._cache:
            self._put(frame, st)
        return self._cache[frame]

    def states(self, frame: int) -> dict:
        arr = self.positions(frame)
        return dict(zip(self.ids, map(tuple, arr.tolist())))

    # ------------------------------------------------------------------ internals
    def _put(self, frame, st):
        pos, _, _, hd, _, dist = st
        self._cache[frame] = np.column_stack([pos, hd, dist])
        self._cache.move_to_end(frame)
        while len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)

    def _build_obstacle_grid(self) -> np.ndarray:
        nc = self._ncell_obs
        cells: dict = {}
        reach = 0.3 + OBSTACLE_RANGE * 5 + 0.25
        for k, (x, y, yaw, hl, hw) in enumerate(self.boxes.tolist()):
            c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
            ex, ey = hl * c + hw * s + reach, hl * s + hw * c + reach
            i0, i1 = (int(math.floor((v - self._origin) / _CELL_OBS)) for v in (x - ex, x + ex))
            j0, j1 = (int(math.floor((v - self._origin) / _CELL_OBS)) for v in (y - ey, y + ey))
            for i in range(max(0, i0), min(nc - 1, i1) + 1):
                for j in range(max(0, j0), min(nc - 1, j1) + 1):
                    lst = cells.setdefault((i, j), [])
                    if len(lst) < MAX_OBSTACLES_PER_CELL:
                        lst.append(k)
        K = max((len(v) for v in cells.values()), default=0)
        grid = np.full((nc, nc, max(K, 1)), -1, np.int64)
        for (i, j), lst in cells.items():
            grid[i, j, :len(lst)] = lst
        return grid

    def _obstacles(self, pos: np.ndarray, idx: np.ndarray):
        """People of ``idx`` near obstacles and their candidate boxes: ``(rows, boxes rows x K x 5, valid)``."""
        if not len(self.boxes) or not len(idx):
            return None
        ij = np.floor((pos[idx] - self._origin) / _CELL_OBS).astype(np.int64)
        np.clip(ij, 0, self._ncell_obs - 1, out=ij)
        cand = self._obs_grid[ij[:, 0], ij[:, 1]]
        valid = cand >= 0
        near = valid.any(1)
        if not near.any():
            return None
        cand, valid = cand[near], valid[near]
        return idx[near], self.boxes[np.where(valid, cand, 0)], valid

    def _pairs(self, pos: np.ndarray):
        """Pairs (i < j by cell order) closer than NEIGHBOUR_RADIUS, at most MAX_NEIGHBOURS * n of the nearest."""
        n = len(pos)
        empty = np.zeros(0, np.int64)
        if n < 2:
            return empty, empty
        if n <= _BRUTE_FORCE:  # few people: every pair
            if self._triu is None:
                self._triu = np.triu_indices(n, 1)
            pi, pj = self._triu
            d = pos[pi] - pos[pj]
            near = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] < NEIGHBOUR_RADIUS * NEIGHBOUR_RADIUS
            return pi[near], pj[near]
        nc = self._ncell
        ij = np.floor((pos - self._origin) / NEIGHBOUR_RADIUS).astype(np.int64)
        np.clip(ij, 1, nc - 2, out=ij)
        key = ij[:, 0] * nc + ij[:, 1]
        order = np.argsort(key, kind="stable")
        uk, start, cnt = np.unique(key[order], return_index=True, return_counts=True)
        pi, pj = [], []
        for dx, dy in ((0, 0), (1, -1), (1, 0), (1, 1), (0, 1)):
            nk = key + dx * nc + dy
            loc = np.minimum(np.searchsorted(uk, nk), len(uk) - 1)
            qi = np.flatnonzero(uk[loc] == nk)
            if not len(qi):
                continue
            c = cnt[loc[qi]]
            tot = int(c.sum())
            offs = np.arange(tot) - np.repeat(np.cumsum(c) - c, c)
            i = np.repeat(qi, c)
            j = order[np.repeat(start[loc[qi]], c) + offs]
            if dx == 0 and dy == 0:
                keep = i < j
                i, j = i[keep], j[keep]
            pi.append(i)
            pj.append(j)
        if not pi:
            return empty, empty
        pi = np.concatenate(pi)
        pj = np.concatenate(pj)
        d = pos[pi] - pos[pj]
        d2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]
        near = d2 < NEIGHBOUR_RADIUS * NEIGHBOUR_RADIUS
        pi, pj, d2 = pi[near], pj[near], d2[near]
        cap = MAX_NEIGHBOURS * n
        if len(pi) > cap:  # dense crowd: keep the nearest pairs only
            sel = np.sort(np.argpartition(d2, cap)[:cap])
            pi, pj = pi[sel], pj[sel]
        return pi, pj

    def _normals(self, pos, pi, pj):
        d = pos[pi] - pos[pj]
        dd = np.hypot(d[:, 0], d[:, 1])
        same = dd < 1e-9
        if same.any():  # coincident people: a fixed direction per pair
            a = (pi[same] * 2.399963 + pj[same] * 0.7)
            d[same] = np.stack([np.cos(a), np.sin(a)], 1) * 1e-9
            dd[same] = 1e-9
        return d / dd[:, None], dd

    def _separate(self, pos, pi, pj, mov):
        """One Jacobi pass pushing overlapping footprints apart (immovable people do not move)."""
        if not len(pi):
            return pos
        nrm, dd = self._normals(pos, pi, pj)
        pen = self.radius[pi] + self.radius[pj] - dd
        act = pen > 0
        if not act.any():
            return pos
        pi, pj, nrm, pen = pi[act], pj[act], nrm[act], pen[act]
        wi, wj = mov[pi].astype(float), mov[pj].astype(float)
        tot = wi + wj
        ok = tot > 0
        pi, pj, nrm, pen, wi, wj, tot = pi[ok], pj[ok], nrm[ok], pen[ok], wi[ok], wj[ok], tot[ok]
        ci = nrm * (pen * wi / tot)[:, None]
        cj = -nrm * (pen * wj / tot)[:, None]
        n = len(pos)
        sx = np.bincount(pi, ci[:, 0], n) + np.bincount(pj, cj[:, 0], n)
        sy = np.bincount(pi, ci[:, 1], n) + np.bincount(pj, cj[:, 1], n)
        cnt = np.bincount(pi, (wi > 0).astype(float), n) + np.bincount(pj, (wj > 0).astype(float), n)
        cnt = np.maximum(cnt, 1.0)
        return pos + np.stack([sx / cnt, sy / cnt], 1)

    def _push_out(self, pos, obs):
        """Move footprints out of every obstacle box (``obs`` from :meth:`_obstacles`)."""
        if obs is None:
            return pos
        idx, boxes, valid = obs
        p = pos[idx]
        d, nx, ny = box_signed_distance(p[:, 0:1], p[:, 1:2], boxes)
        pen = np.where(valid, self.radius[idx][:, None] - d, 0.0)
        pen = np.maximum(pen, 0.0)
        if not pen.any():
            return pos
        out = pos.copy()
        out[idx, 0] += (pen * nx).sum(1)
        out[idx, 1] += (pen * ny).sum(1)
        return out

    def _clamp(self, pos):
        return np.clip(pos, -self.limit, self.limit)

    def _route_point(self, s: np.ndarray, idx: np.ndarray):
        """Points at arc length ``s`` on the routes of people ``idx`` and their segment indices."""
        sx0, sy0, sdx, sdy, slen, sst = self._seg
        key = self.base[idx] + np.mod(s, self.length[idx])
        k = np.searchsorted(sst, key, side="right") - 1
        k = np.clip(k, self.first[idx], self.last[idx])
        a = np.where(slen[k] > 0, (key - sst[k]) / np.maximum(slen[k], 1e-12), 0.0)
        return np.stack([sx0[k] + a * sdx[k], sy0[k] + a * sdy[k]], 1), k

    def _initial_state(self):
        n = self.n
        pos = np.zeros((n, 2))
        hd = np.zeros(n)
        dist = np.zeros(n)
        s = np.zeros(n)
        for i, p in enumerate(self.people):
            x, y, h, d = p.trajectory.state(self.t0)
            pos[i] = (x, y)
            hd[i] = h
            dist[i] = d
        w = self.walk
        if len(w):  # walkers start where their (re-planned) route is at t0
            s[w] = self.s0[w]
            pos[w], k = self._route_point(s[w], w)
            sdx, sdy = self._seg[2][k], self._seg[3][k]
            moving = np.hypot(sdx, sdy) > 1e-9
            hd[w] = np.where(moving, np.arctan2(sdy, sdx), hd[w])
        # clear the start: nobody inside a prop or on top of someone else
        everyone = np.ones(n, bool)
        idx = np.arange(n)
        for _ in range(INIT_ITERS):
            pi, pj = self._pairs(pos)
            pos = self._separate(pos, pi, pj, everyone)
            pos = self._clamp(self._push_out(pos, self._obstacles(pos, idx)))
        vel = np.stack([np.cos(hd), np.sin(hd)], 1) * self.speed[:, None]
        return pos, vel, vel.copy(), hd, s, dist

    def _advance_frame(self, st):
        for _ in range(self.substeps):
            st = self._step(st, self.dt)
        return st

    def _step(self, st, dt):
        pos, vel, hv, hd, s, dist = st
        n = self.n
        w = self.walk
        mov = self.movable
        sp = self.speed
        desired = np.zeros((n, 2))
        target = pos.copy()
        s = s.copy()
        if len(w):
            ahead, k = self._route_point(s[w] + LOOKAHEAD, w)
            lag = np.hypot(*(pos[w] - ahead).T) - LOOKAHEAD
            # the route point waits for a held-up walker (not on legs still crossing an obstacle: unreachable)
            go = np.where(self._seg_blocked[k], 1.0, np.clip(1.5 - lag, 0.0, 1.0))
            s[w] = np.mod(s[w] + sp[w] * dt * go, self.length[w])
            target[w] = self._route_point(s[w] + LOOKAHEAD, w)[0]
            e = target[w] - pos[w]
            ne = np.maximum(np.hypot(e[:, 0], e[:, 1]), 1e-6)
            desired[w] = e * (sp[w] / ne)[:, None]
        f = np.zeros((n, 2))
        pi, pj = self._pairs(pos)
        head = np.stack([np.cos(hd), np.sin(hd)], 1)
        if len(pi):
            nrm, dd = self._normals(pos, pi, pj)
            gap = dd - self.radius[pi] - self.radius[pj]
            mag = REPULSION * np.exp(-np.maximum(gap, -0.5) / REPULSION_RANGE)
            ei, ej = head[pi], head[pj]
            cos_i = -(nrm[:, 0] * ei[:, 0] + nrm[:, 1] * ei[:, 1])  # > 0: j is ahead of i
            cos_j = nrm[:, 0] * ej[:, 0] + nrm[:, 1] * ej[:, 1]
            wi = ANISOTROPY + (1.0 - ANISOTROPY) * 0.5 * (1.0 + cos_i)
            wj = ANISOTROPY + (1.0 - ANISOTROPY) * 0.5 * (1.0 + cos_j)
            si = SIDESTEP * mag * np.maximum(cos_i, 0.0)
            sj = SIDESTEP * mag * np.maximum(cos_j, 0.0)
            fix = mag * wi * nrm[:, 0] + si * ei[:, 1]   # right of heading (ex, ey) is (ey, -ex)
            fiy = mag * wi * nrm[:, 1] - si * ei[:, 0]
            fjx = -mag * wj * nrm[:, 0] + sj * ej[:, 1]
            fjy = -mag * wj * nrm[:, 1] - sj * ej[:, 0]
            f[:, 0] = np.bincount(pi, fix, n) + np.bincount(pj, fjx, n)
            f[:, 1] = np.bincount(pi, fiy, n) + np.bincount(pj, fjy, n)
        obs = self._obstacles(pos, w)  # candidates stay valid for this step (cells reach 1.5 m further)
        if obs is not None:
            idx, boxes, valid = obs
            p = pos[idx]
            d, nx, ny = box_signed_distance(p[:, 0:1], p[:, 1:2], boxes)
            gap = d - self.radius[idx][:, None]
            mag = np.where(valid & (gap < 1.0),
                           OBSTACLE_REPULSION * np.exp(-np.maximum(gap, -0.5) / OBSTACLE_RANGE), 0.0)
            du = desired[idx] / np.maximum(sp[idx], 1e-6)[:, None]
            into = np.maximum(-(du[:, 0:1] * nx + du[:, 1:2] * ny), 0.0)
            # slide along the box towards the side of its centre the route point is on (stays the same while
            # sliding along a face, so walkers do not dither in front of a prop)
            tx, ty = -ny, nx
            tg = target[idx]
            side = np.where((tg[:, 0:1] - boxes[..., 0]) * tx + (tg[:, 1:2] - boxes[..., 1]) * ty >= 0, 1.0, -1.0)
            f[idx, 0] += (mag * (nx + into * side * tx)).sum(1)
            f[idx, 1] += (mag * (ny + into * side * ty)).sum(1)
        v = vel + min(1.0, dt / TAU) * (desired - vel) + dt * f  # (stable for long steps at low frame rates)
        vmax = MAX_SPEED_FACTOR * sp
        vn = np.hypot(v[:, 0], v[:, 1])
        v *= np.where(vn > vmax, vmax / np.maximum(vn, 1e-12), 1.0)[:, None]
        v[~mov] = 0.0
        new = pos + v * dt
        for _ in range(PROJECTION_ITERS):
            new = self._separate(new, pi, pj, mov)
        new = self._push_out(new, obs)  # last: nobody ends a step inside a prop
        new = self._clamp(new)
        new[~mov] = pos[~mov]
        step = new - pos
        vel = step / dt
        hv = 0.75 * hv + 0.25 * vel
        hn = np.hypot(hv[:, 0], hv[:, 1])
        turn = mov & (hn > 0.15 * sp)
        hd = np.where(turn, np.arctan2(hv[:, 1], hv[:, 0]), hd)
        dist = dist + np.hypot(step[:, 0], step[:, 1])
        return new, vel, hv, hd, s, dist
