"""People and vehicles with persistent identities, appearances and trajectories.

Every agent has an integer ``identity`` (unique in a scene, shared by all
cameras), a ``category`` (``person``, ``car``, ``van`` or ``bike``), an
appearance and a :class:`Trajectory` on the ground plane, so it can be posed
at any time ``t`` (seconds) and appears in several frames and cameras.
Cyclists are two agents: the ``bike`` and a ``person`` riding it
(``Person.riding`` is the bike's identity).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "Trajectory", "PersonLook", "Person", "Vehicle", "VEHICLE_SIZES", "populate", "person_skeletons",
    "rider_skeleton", "PERSON_POINTS",
]

# --------------------------------------------------------------------------
# palettes (RGB albedo)
SHIRTS = (
    (30, 30, 32), (235, 235, 230), (120, 120, 125), (35, 45, 85), (170, 35, 35), (50, 90, 160),
    (50, 110, 60), (175, 160, 120), (110, 70, 45), (225, 210, 40), (230, 120, 30), (140, 60, 120),
    (80, 150, 170), (200, 200, 205), (190, 95, 110), (60, 60, 70),
)
TROUSERS = ((40, 55, 85), (28, 28, 30), (90, 90, 95), (160, 145, 110), (85, 65, 45), (55, 70, 110),
            (60, 60, 55), (120, 40, 40), (200, 195, 185))
SKIN = ((235, 200, 170), (215, 170, 135), (190, 140, 100), (150, 100, 70), (100, 65, 45), (70, 48, 35))
HAIR = ((25, 20, 18), (60, 40, 25), (110, 75, 45), (200, 170, 110), (150, 150, 150), (120, 40, 25))
SHOES = ((25, 25, 25), (60, 45, 35), (200, 200, 200), (90, 90, 95))
BAGS = ((30, 30, 30), (70, 50, 35), (40, 60, 110), (150, 40, 40), (90, 100, 70))
CAR_COLOURS = (
    (225, 225, 228), (170, 172, 178), (110, 112, 118), (25, 25, 28), (40, 55, 100), (150, 25, 25),
    (45, 95, 170), (40, 75, 50), (190, 175, 145),
)
CAR_WEIGHTS = (0.22, 0.18, 0.14, 0.18, 0.07, 0.07, 0.06, 0.04, 0.04)

#: (length, width, height) ranges in metres per vehicle type
VEHICLE_SIZES = {
    "car": ((4.0, 4.9), (1.70, 1.90), (1.40, 1.55)),
    "van": ((4.9, 5.9), (1.90, 2.05), (2.10, 2.60)),
    "bike": ((1.65, 1.85), (0.55, 0.65), (1.05, 1.15)),
}
VEHICLE_SPEEDS = {"car": (4.0, 11.0), "van": (4.0, 9.0), "bike": (3.0, 6.0)}


def _pick(rng: np.random.Generator, options, weights=None):
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _rgb(c, rng: np.random.Generator, jitter: float = 10.0) -> tuple[int, int, int]:
    j = rng.uniform(-jitter, jitter, 4)
    return tuple(int(min(255, max(0, round(v + j[0] + 0.4 * j[i + 1])))) for i, v in enumerate(c))


# --------------------------------------------------------------------------
# trajectories
@dataclass
class Trajectory:
    """Piecewise-linear path on the ground traversed at constant ``speed`` (m/s).

    ``mode`` ``"loop"`` closes the polyline (back to the first waypoint);
    ``"wrap"`` restarts at the first waypoint after the last one (vehicles
    driving through the scene). ``offset`` is the arc length at ``t = 0``.
    A speed of 0 makes a standing agent facing ``heading`` (degrees).
    """

    waypoints: list
    speed: float = 1.3
    offset: float = 0.0
    mode: str = "loop"
    heading: float = 0.0

    def __post_init__(self):
        pts = [(float(x), float(y)) for x, y in self.waypoints]
        if self.mode == "loop" and len(pts) > 1:
            pts = pts + [pts[0]]
        self._pts = pts
        cum = [0.0]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            cum.append(cum[-1] + math.hypot(x1 - x0, y1 - y0))
        self._cum = cum

    @property
    def length(self) -> float:
        return self._cum[-1]

    def state(self, t: float) -> tuple[float, float, float, float]:
        """``(x, y, heading_rad, distance_travelled)`` at time ``t``."""
        dist = self.speed * t
        if self.speed == 0.0 or self.length <= 1e-9:
            x, y = self._pts[0]
            return x, y, math.radians(self.heading), 0.0
        s = (self.offset + dist) % self.length
        i = min(max(bisect.bisect_right(self._cum, s) - 1, 0), len(self._pts) - 2)
        seg = self._cum[i + 1] - self._cum[i]
        a = (s - self._cum[i]) / seg if seg > 0 else 0.0
        (x0, y0), (x1, y1) = self._pts[i], self._pts[i + 1]
        return x0 + a * (x1 - x0), y0 + a * (y1 - y0), math.atan2(y1 - y0, x1 - x0), dist

    def to_dict(self) -> dict:
        return {"waypoints": [[round(x, 3), round(y, 3)] for x, y in self.waypoints],
                "speed": round(self.speed, 4), "offset": round(self.offset, 4), "mode": self.mode,
                "heading": round(self.heading, 3)}


# --------------------------------------------------------------------------
# people
@dataclass
class PersonLook:
    height: float
    build: float           # torso/hip width factor (0.85-1.2)
    shoulders: float       # shoulder width factor
    shirt: tuple
    shirt2: tuple          # pattern colour
    pattern: str           # plain | stripes | check
    trousers: tuple
    skin: tuple
    hair: tuple
    hair_style: str        # short | long | bald
    shoes: tuple
    long_sleeves: bool
    bag: str               # none | shoulder | backpack
    bag_colour: tuple

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else (round(v, 4) if isinstance(v, float) else v))
                for k, v in d.items()}


@dataclass
class Person:
    identity: int
    look: PersonLook
    trajectory: Trajectory
    phase0: float = 0.0
    riding: int | None = None
    category: str = field(default="person", init=False)

    def to_dict(self) -> dict:
        return {"identity": self.identity, "category": self.category, "look": self.look.to_dict(),
                "trajectory": self.trajectory.to_dict(), "riding": self.riding}


def random_look(rng: np.random.Generator) -> PersonLook:
    shirt = _rgb(_pick(rng, SHIRTS), rng, 14)
    pattern = _pick(rng, ("plain", "stripes", "check"), (0.7, 0.18, 0.12))
    shirt2 = _rgb(_pick(rng, SHIRTS), rng, 10)
    if sum(abs(a - b) for a, b in zip(shirt, shirt2)) < 90:  # make a pattern visible
        shirt2 = tuple(255 - v for v in shirt2)
    female = rng.random() < 0.5
    h = float(np.clip(rng.normal(1.64 if female else 1.77, 0.07), 1.5, 1.95))
    return PersonLook(
        height=round(h, 3),
        build=round(float(rng.uniform(0.88, 1.18)), 3),
        shoulders=round(float(rng.uniform(0.88, 1.08) * (0.93 if female else 1.0)), 3),
        shirt=shirt, shirt2=shirt2, pattern=pattern,
        trousers=_rgb(_pick(rng, TROUSERS), rng, 10),
        skin=_rgb(_pick(rng, SKIN), rng, 6),
        hair=_rgb(_pick(rng, HAIR), rng, 6),
        hair_style=_pick(rng, ("short", "long", "bald"), (0.45, 0.45, 0.1) if female else (0.8, 0.08, 0.12)),
        shoes=_pick(rng, SHOES),
        long_sleeves=bool(rng.random() < 0.55),
        bag=_pick(rng, ("none", "shoulder", "backpack"), (0.55, 0.2, 0.25)),
        bag_colour=_rgb(_pick(rng, BAGS), rng, 8),
    )


# --------------------------------------------------------------------------
# vehicles
@dataclass
class Vehicle:
    identity: int
    category: str          # car | van | bike
    colour: tuple
    length: float
    width: float
    height: float
    trajectory: Trajectory
    parked: bool = False
    rider: int | None = None

    def to_dict(self) -> dict:
        return {"identity": self.identity, "category": self.category, "colour": list(self.colour),
                "size": [round(self.length, 3), round(self.width, 3), round(self.height, 3)],
                "trajectory": self.trajectory.to_dict(), "parked": self.parked, "rider": self.rider}


def random_vehicle(rng: np.random.Generator, identity: int, category: str, traj: Trajectory,
                   parked: bool = False) -> Vehicle:
    (l0, l1), (w0, w1), (h0, h1) = VEHICLE_SIZES[category]
    if category == "bike":
        col = _rgb(_pick(rng, ((30, 30, 30), (180, 30, 30), (40, 80, 160), (200, 200, 200), (40, 120, 60))),
                   rng, 8)
    else:
        col = _rgb(_pick(rng, CAR_COLOURS, CAR_WEIGHTS), rng, 8)
    return Vehicle(identity, category, col, round(float(rng.uniform(l0, l1)), 3),
                   round(float(rng.uniform(w0, w1)), 3), round(float(rng.uniform(h0, h1)), 3), traj, parked)


# --------------------------------------------------------------------------
# population
def populate(rng: np.random.Generator, world, crowd_density: float, num_vehicles: int,
             num_parked: int = 0, standing_fraction: float = 0.12,
             vehicle_mix=(0.6, 0.2, 0.2)) -> tuple[list[Person], list[Vehicle]]:
    """People (``crowd_density`` per 100 m^2 of walkable area) and vehicles for ``world``.

    ``vehicle_mix``: probabilities of car / van / bike for moving vehicles (bikes only on grass); vehicles
    drive the road lanes, circle a pavement's parking-lot aisle or ride the park path.
    """
    people: list[Person] = []
    vehicles: list[Vehicle] = []
    n_people = int(round(crowd_density * world.walkable_area() / 100.0))
    ident = 1
    for _ in range(n_people):
        look = random_look(rng)
        if rng.random() < standing_fraction:
            x, y = world.random_walk_point(rng)
            traj = Trajectory([(x, y)], speed=0.0, heading=float(rng.uniform(0, 360)))
        else:
            wps = world.random_walk_route(rng, int(rng.integers(3, 7)))
            speed = float(rng.uniform(0.9, 1.7)) * look.height / 1.75
            traj = Trajectory(wps, speed=round(speed, 4))
            traj.offset = round(float(rng.uniform(0.0, max(traj.length, 1e-6))), 4)
        people.append(Person(ident, look, traj, phase0=round(float(rng.uniform(0, 2 * math.pi)), 4)))
        ident += 1
    for _ in range(num_vehicles):
        cat = _pick(rng, ("car", "van", "bike"), vehicle_mix)
        if world.surface == "grass":
            cat = "bike"  # only bicycles in the park
        wps, mode = world.random_drive_route(rng, cat)
        lo, hi = VEHICLE_SPEEDS[cat]
        if world.surface != "road":  # parking lot / park path: slow
            lo, hi = lo * 0.4, hi * 0.4
        traj = Trajectory(wps, speed=round(float(rng.uniform(lo, hi)), 4), mode=mode)
        traj.offset = round(float(rng.uniform(0.0, max(traj.length, 1e-6))), 4)
        v = random_vehicle(rng, ident, cat, traj)
        vehicles.append(v)
        ident += 1
        if cat == "bike":
            look = random_look(rng)
            look.bag = "none" if look.bag == "shoulder" else look.bag
            rider = Person(ident, look, traj, phase0=round(float(rng.uniform(0, 2 * math.pi)), 4), riding=v.identity)
            v.rider = ident
            people.append(rider)
            ident += 1
    for _ in range(num_parked):
        spot = world.random_parking_spot(rng)
        if spot is None:
            break
        x, y, hd = spot
        cat = _pick(rng, ("car", "van"), (0.8, 0.2))
        traj = Trajectory([(x, y)], speed=0.0, heading=hd)
        vehicles.append(random_vehicle(rng, ident, cat, traj, parked=True))
        ident += 1
    return people, vehicles


# --------------------------------------------------------------------------
# skeletons
#: indices of the per-person 3-D points returned by :func:`person_skeletons`
PERSON_POINTS = {
    "head": 0, "hair": 1, "neck0": 2, "neck1": 3,
    "r_hip": 4, "r_knee": 5, "r_ankle": 6, "r_toe": 7,
    "l_hip": 8, "l_knee": 9, "l_ankle": 10, "l_toe": 11,
    "r_shoulder": 12, "r_elbow": 13, "r_wrist": 14,
    "l_shoulder": 15, "l_elbow": 16, "l_wrist": 17,
    "torso": 18,      # 8 corners: bottom (fl, fr, br, bl), top (fl, fr, br, bl)
    "bag": 26,        # 8 corners, same order
    "foot": 34,       # ground point below the person
    "head_top": 35,
    "long_hair": 36,  # lower end of long hair
}
N_PERSON_POINTS = 37


def _frame(heading):
    f = np.stack([np.cos(heading), np.sin(heading), np.zeros_like(heading)], -1)
    lft = np.stack([-np.sin(heading), np.cos(heading), np.zeros_like(heading)], -1)
    return f, lft


def person_skeletons(pos: np.ndarray, heading: np.ndarray, phase: np.ndarray, amp: np.ndarray,
                     height: np.ndarray, build: np.ndarray, shoulders: np.ndarray, bag: np.ndarray
                     ) -> np.ndarray:
    """3-D body points of N walking/standing people (vectorised).

    ``pos`` N x 2 ground positions, ``heading`` radians, ``phase`` gait phase
    (radians), ``amp`` swing amplitude (radians, 0 = standing), ``bag`` 0/1/2
    (none/shoulder/backpack). Returns N x :data:`N_PERSON_POINTS` x 3.
    """
    n = len(pos)
    H = height[:, None]
    f, lf = _frame(heading)
    up = np.array([0.0, 0.0, 1.0])
    base = np.concatenate([pos, np.zeros((n, 1))], -1)

    def P(fw, lat, z):
        """Local (forward, left, up) offsets -> world points, all N x 1 or scalars."""
        return base + f * fw + lf * lat + up * z

    Lt = 0.245 * H
    Ls = 0.245 * H
    ankle_z = 0.04 * H
    out = np.empty((n, N_PERSON_POINTS, 3))
    legs = []
    reach = []
    for side, ph in ((-1.0, phase), (1.0, phase + math.pi)):
        a = (amp * np.sin(ph))[:, None]
        b = (1.3 * amp * np.maximum(0.0, np.cos(ph)))[:, None]
        legs.append((side, a, b))
        reach.append(Lt * np.cos(a) + Ls * np.cos(a - b))
    hip_z = ankle_z + np.maximum(reach[0], reach[1])  # the stance leg touches the ground
    hw = 0.052 * H * build[:, None]
    for k, (side, a, b) in enumerate(legs):
        o = 4 + 4 * k
        hipf = np.zeros_like(a)
        out[:, o] = P(hipf, side * hw, hip_z)
        kf = Lt * np.sin(a)
        kz = hip_z - Lt * np.cos(a)
        out[:, o + 1] = P(kf, side * hw, kz)
        af = kf + Ls * np.sin(a - b)
        az = kz - Ls * np.cos(a - b)
        out[:, o + 2] = P(af, side * hw * 1.05, az)
        # toe: the foot stays roughly flat, lifted at push-off
        out[:, o + 3] = P(af + 0.135 * H, side * hw * 1.1, np.maximum(az - 0.03 * H, 0.005 * H))
    lean = 0.05 * amp[:, None] * H  # forward lean when walking
    sh_z = hip_z + 0.30 * H
    bw, bd = 0.092 * H * build[:, None], 0.058 * H * build[:, None]
    sw, sd = 0.118 * H * shoulders[:, None], 0.052 * H * build[:, None]
    z0 = hip_z - 0.035 * H
    for i, (fw, lat) in enumerate(((1, 1), (1, -1), (-1, -1), (-1, 1))):
        out[:, 18 + i] = P(fw * bd, lat * bw, z0)
        out[:, 22 + i] = P(fw * sd + lean, lat * sw * 0.82, sh_z)
    out[:, 2] = P(lean, 0.0, sh_z - 0.01 * H)
    out[:, 3] = P(lean * 1.1, 0.0, sh_z + 0.045 * H)
    head_c = sh_z + 0.105 * H
    out[:, 0] = P(lean * 1.2 + 0.005 * H, 0.0, head_c)
    out[:, 1] = P(lean * 1.2 - 0.025 * H, 0.0, head_c + 0.016 * H)
    out[:, 35] = P(lean * 1.2, 0.0, head_c + 0.064 * H)
    out[:, 36] = P(lean - 0.045 * H, 0.0, sh_z - 0.04 * H)
    # arms swing opposite to the leg on the same side
    Lu, Lf = 0.175 * H, 0.16 * H
    for k, (side, ph) in enumerate(((-1.0, phase + math.pi), (1.0, phase))):
        o = 12 + 3 * k
        g = (0.75 * amp * np.sin(ph))[:, None]
        d = 0.18 + 0.45 * np.maximum(0.0, g) + 0.1 * (amp[:, None] > 0)
        lat0 = side * (sw - 0.012 * H)
        out[:, o] = P(lean, lat0, sh_z - 0.03 * H)
        ef = lean + Lu * np.sin(g)
        ez = sh_z - 0.03 * H - Lu * np.cos(g)
        out[:, o + 1] = P(ef, lat0 + side * 0.02 * H, ez)
        out[:, o + 2] = P(ef + Lf * np.sin(g + d), lat0 + side * 0.03 * H, ez - Lf * np.cos(g + d))
    # bag: shoulder bag at the hip or backpack on the back
    bagk = bag[:, None]
    back = (bagk == 2)
    cf = np.where(back, -(sd + 0.07 * H), 0.0)
    cl = np.where(back, 0.0, (sw + 0.02 * H))
    cz = np.where(back, sh_z - 0.14 * H, hip_z - 0.02 * H)
    hx = np.where(back, 0.05 * H, 0.04 * H)       # half depth (forward)
    hy = np.where(back, 0.09 * H, 0.025 * H)      # half width (lateral)
    hz = np.where(back, 0.12 * H, 0.075 * H)      # half height
    for i, (fw, lat) in enumerate(((1, 1), (1, -1), (-1, -1), (-1, 1))):
        out[:, 26 + i] = P(cf + fw * hx, cl + lat * hy, cz - hz)
        out[:, 30 + i] = P(cf + fw * hx, cl + lat * hy, cz + hz)
    out[:, 34] = base
    return out


def rider_skeleton(pos, heading: float, crank: float, look: PersonLook, bike: Vehicle) -> np.ndarray:
    """3-D body points (same layout as :func:`person_skeletons`) of a cyclist."""
    H = look.height
    f, lf = _frame(np.array([heading]))
    f, lf = f[0], lf[0]
    up = np.array([0.0, 0.0, 1.0])
    base = np.array([pos[0], pos[1], 0.0])

    def P(fw, lat, z):
        return base + f * fw + lf * lat + up * z

    L = bike.length
    seat_f, seat_z = -0.12 * L, 0.92 * bike.height
    bar_f, bar_z = 0.30 * L, 1.0 * bike.height
    out = np.empty((N_PERSON_POINTS, 3))
    hw = 0.05 * H * look.build
    Lt, Ls = 0.245 * H, 0.245 * H
    crank_r = 0.17
    bb_f, bb_z = 0.02 * L, 0.30
    for k, (side, ph) in enumerate(((-1.0, crank), (1.0, crank + math.pi))):
        o = 4 + 4 * k
        hip = np.array([seat_f, seat_z + 0.04])
        foot = np.array([bb_f + crank_r * math.cos(ph), bb_z + crank_r * math.sin(ph)])
        dvec = foot - hip
        dist = min(float(np.hypot(*dvec)), Lt + Ls - 1e-3)
        # knee by the law of cosines, bent forwards
        ang = math.atan2(dvec[1], dvec[0])
        c = (Lt * Lt + dist * dist - Ls * Ls) / (2 * Lt * dist)
        kang = ang + math.acos(max(-1.0, min(1.0, c)))
        knee = hip + Lt * np.array([math.cos(kang), math.sin(kang)])
        out[o] = P(hip[0], side * hw, hip[1])
        out[o + 1] = P(knee[0], side * hw * 1.3, knee[1])
        out[o + 2] = P(foot[0], side * hw * 1.4, foot[1])
        out[o + 3] = P(foot[0] + 0.11 * H, side * hw * 1.4, foot[1] - 0.01)
    # torso leaning forwards towards the handlebar
    lean = math.radians(32.0)
    tl = 0.32 * H
    sh = np.array([seat_f + tl * math.sin(lean), seat_z + 0.02 + tl * math.cos(lean)])
    bw, bd = 0.09 * H * look.build, 0.055 * H * look.build
    sw, sd = 0.115 * H * look.shoulders, 0.05 * H * look.build
    for i, (fw, lat) in enumerate(((1, 1), (1, -1), (-1, -1), (-1, 1))):
        out[18 + i] = P(seat_f + fw * bd, lat * bw, seat_z)
        out[22 + i] = P(sh[0] + fw * sd, lat * sw, sh[1])
    out[2] = P(sh[0], 0.0, sh[1] - 0.01 * H)
    out[3] = P(sh[0] + 0.03 * H, 0.0, sh[1] + 0.04 * H)
    hc = np.array([sh[0] + 0.07 * H, sh[1] + 0.10 * H])
    out[0] = P(hc[0], 0.0, hc[1])
    out[1] = P(hc[0] - 0.03 * H, 0.0, hc[1] + 0.016 * H)
    out[35] = P(hc[0], 0.0, hc[1] + 0.064 * H)
    out[36] = P(sh[0] - 0.05 * H, 0.0, sh[1] - 0.05 * H)
    for k, side in enumerate((-1.0, 1.0)):
        o = 12 + 3 * k
        s = np.array([sh[0], sh[1] - 0.02 * H])
        hand = np.array([bar_f, bar_z])
        mid = (s + hand) * 0.5 + np.array([0.0, -0.03])
        out[o] = P(s[0], side * (sw - 0.02 * H), s[1])
        out[o + 1] = P(mid[0], side * (sw + 0.01 * H), mid[1])
        out[o + 2] = P(hand[0], side * 0.26, hand[1])
    bagk = 2 if look.bag == "backpack" else 0
    for i, (fw, lat) in enumerate(((1, 1), (1, -1), (-1, -1), (-1, 1))):
        if bagk == 2:
            c = np.array([sh[0] - 0.12 * H * math.cos(lean) - 0.06, sh[1] - 0.12 * H])
            out[26 + i] = P(c[0] + fw * 0.05 * H, lat * 0.09 * H, c[1] - 0.12 * H)
            out[30 + i] = P(c[0] + fw * 0.05 * H, lat * 0.09 * H, c[1] + 0.12 * H)
        else:
            out[26 + i] = out[18 + i]
            out[30 + i] = out[22 + i]
    out[34] = base
    return out
