"""Scene configuration, deterministic scene construction and frame generation."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

import numpy as np

from .agents import populate
from .camera import MAX_HEIGHT_M, MAX_RESOLUTION, MIN_HEIGHT_M, MIN_RESOLUTION, Camera
from .crowd import CrowdSim
from .faults import CameraFault, fault_light
from .randomize import apply_effects, light_from_params, sample_params, validate_ranges
from .render import PersonSprites, RenderResult, agent_states, render_frame
from .sprites import load_sprite_bank
from .world import DEFAULT_PROPS, PROP_KINDS, ROAD_HALF, SURFACES, World, list_background_images

__all__ = ["SceneConfig", "Scene", "Frame", "DEFAULT_CAMERA_RANGES", "CATEGORIES"]

CATEGORIES = ("person", "car", "van", "bike")

#: ranges for automatically placed cameras (``SceneConfig.cameras`` given as a count)
DEFAULT_CAMERA_RANGES = {
    "height": [4.0, 9.0],
    "tilt": [14.0, 40.0],
    "hfov": [45.0, 85.0],
    "k1": [-0.12, 0.0],
    "k2": [0.0, 0.0],
    "roll": [-2.0, 2.0],
}
_CAMERA_LIMITS = {"height": (MIN_HEIGHT_M, MAX_HEIGHT_M), "tilt": (0.0, 89.9), "hfov": (10.01, 169.99),
                  "k1": (-0.5, 0.5), "k2": (-0.5, 0.5), "roll": (-45.0, 45.0)}


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass
class SceneConfig:
    """Everything that defines a scene; the same config and seed give bit-identical frames.

    ``cameras``: a count (placed around the square from ``camera_ranges``,
    looking inwards so agents are seen by several cameras) or a list of
    :class:`~synthetic.scene.camera.Camera` parameter dicts (``resolution``
    defaults to ``resolution``). ``duration`` is in frames, ``fps`` sets the
    time step. ``crowd_density`` is people per 100 m^2 of walkable ground
    (0.5 sparse, 5 busy, 50+ dense crowds). ``props``: None (defaults for the
    surface), a dict of counts per kind (``pole``, ``bench``, ``bin``,
    ``tree``, ``pillar``, ``parked_vehicle``) or a list of prop dicts with
    ``kind``, ``x``, ``y`` (and optional ``yaw``, ``size``). ``randomization``
    overrides entries of :data:`~synthetic.scene.randomize.DEFAULT_RANGES`
    (e.g. ``{"time_of_day": "night", "rain_prob": 1.0}``); values are drawn
    per frame (``randomize_per="frame"``) or once per camera sequence
    (``"sequence"``). ``background_dir``: optional folder of real background
    images used instead of the procedural surroundings.

    ``collision_avoidance`` (default on): people on foot avoid each other,
    props and parked vehicles (:mod:`synthetic.scene.crowd`); their planned
    trajectories become routes they follow. Off: everyone follows the plan
    exactly (walking through each other and through props).

    ``person_sprites``: draw people with real appearance, cut out of a
    folder of person crops (:mod:`synthetic.scene.sprites`): ``root`` (the
    folder), ``fraction`` (share of people on foot drawn that way, default
    1.0), ``stride`` (every n-th crop of a tracklet, default 2), ``licence``
    (the crops' licence, recorded with every frame) and ``cache_dir`` (where
    the cut-out mattes are cached). Each such person keeps one crop
    tracklet (played as it walks) in every frame and camera; its
    annotations say which crops it wears (``appearance``). ``recolour``
    (default false) turns each person's clothing colours by a random hue,
    so one tracklet yields many distinct-looking people (synthetic re-id
    identities); ``exclude`` lists file-name prefixes to leave out (e.g. the
    identities of a test set).

    Camera faults (``randomization.camera_fault_prob`` > 0, names in
    ``randomization.camera_faults``) are recorded per frame as
    ``params["camera_fault"]`` (``none`` without one) with
    ``camera_fault_params`` (every value drawn) and ``camera_fault_labels``,
    the label rule: ``kept`` (``defocused``, ``dirty_lens``: labels unchanged),
    ``occluded`` (``covered``: pixels under the cover, opacity >= 0.5, are
    occluded, so visible boxes, pixels and fractions exclude them and fully
    hidden objects have no visible box; objects get ``fault_hidden_pixels``)
    or ``dropped`` (``turned_away``, ``too_dark``: nothing is in view or
    discernible, the frame has no objects and an empty mask).
    """

    seed: int = 0
    cameras: int | list = 2
    resolution: tuple = (640, 360)
    duration: int = 10
    fps: float = 5.0
    surface: str = "road"
    world_size: float = 50.0
    crowd_density: float = 1.0
    num_vehicles: int = 3
    props: dict | list | None = None
    camera_ranges: dict = field(default_factory=dict)
    randomization: dict = field(default_factory=dict)
    randomize_per: str = "frame"
    background_dir: str | None = None
    start_time: float = 0.0
    collision_avoidance: bool = True
    person_sprites: dict | None = None

    # ------------------------------------------------------------------
    def validate(self) -> "SceneConfig":
        """Check every parameter; raise ValueError naming the first bad one."""
        n = "SceneConfig"
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"{n}.seed must be a non-negative int, got {self.seed!r}")
        r = self.resolution
        if not (isinstance(r, (tuple, list)) and len(r) == 2 and all(_is_int(v) for v in r)):
            raise ValueError(f"{n}.resolution must be two ints (width, height), got {r!r}")
        if not (MIN_RESOLUTION[0] <= r[0] <= MAX_RESOLUTION[0] and MIN_RESOLUTION[1] <= r[1] <= MAX_RESOLUTION[1]):
            raise ValueError(f"{n}.resolution must be between {MIN_RESOLUTION[0]}x{MIN_RESOLUTION[1]} and "
                             f"{MAX_RESOLUTION[0]}x{MAX_RESOLUTION[1]} pixels, got {r[0]}x{r[1]}")
        if not _is_int(self.duration) or not 1 <= self.duration <= 10_000_000:
            raise ValueError(f"{n}.duration must be an int >= 1 (frames), got {self.duration!r}")
        if not _is_num(self.fps) or not 0.01 <= self.fps <= 1000:
            raise ValueError(f"{n}.fps must be a number in [0.01, 1000], got {self.fps!r}")
        if not _is_num(self.start_time) or self.start_time < 0:
            raise ValueError(f"{n}.start_time must be a number >= 0 (seconds), got {self.start_time!r}")
        if self.surface not in SURFACES:
            raise ValueError(f"{n}.surface must be one of {SURFACES}, got {self.surface!r}")
        if not _is_num(self.world_size) or not 10.0 <= self.world_size <= 500.0:
            raise ValueError(f"{n}.world_size must be a number of metres in [10, 500], got {self.world_size!r}")
        if not _is_num(self.crowd_density) or not 0.0 <= self.crowd_density <= 400.0:
            raise ValueError(f"{n}.crowd_density must be in [0, 400] people per 100 m^2, got {self.crowd_density!r}")
        if self.crowd_density * self.world_size ** 2 / 100.0 > 20000:
            raise ValueError(f"{n}.crowd_density {self.crowd_density} over a {self.world_size} m world gives more "
                             f"than 20000 people; reduce crowd_density or world_size")
        if not _is_int(self.num_vehicles) or not 0 <= self.num_vehicles <= 500:
            raise ValueError(f"{n}.num_vehicles must be an int in [0, 500], got {self.num_vehicles!r}")
        if self.num_vehicles and self.surface in ("indoor", "platform"):
            raise ValueError(f"{n}.num_vehicles must be 0 for surface {self.surface!r} (no moving vehicles there)")
        self._validate_props(n)
        self._camera_ranges(n)
        if _is_int(self.cameras):
            if not 1 <= self.cameras <= 64:
                raise ValueError(f"{n}.cameras must be a count in [1, 64] or a list of camera dicts, "
                                 f"got {self.cameras!r}")
        elif isinstance(self.cameras, (list, tuple)):
            if not self.cameras:
                raise ValueError(f"{n}.cameras must not be empty")
            for i, c in enumerate(self.cameras):
                cam = self._camera(c, f"{n}.cameras[{i}]")
                E = self.world_size * 0.5
                for a in ("x", "y"):
                    if abs(getattr(cam, a)) > E - 0.5:
                        raise ValueError(f"{n}.cameras[{i}].{a} must lie inside the world square "
                                         f"(|{a}| <= {E - 0.5:g} m for world_size {self.world_size:g}), "
                                         f"got {getattr(cam, a)!r}")
        else:
            raise ValueError(f"{n}.cameras must be a count or a list of camera dicts, got {self.cameras!r}")
        validate_ranges(self.randomization, f"{n}.randomization")
        if not isinstance(self.collision_avoidance, bool):
            raise ValueError(f"{n}.collision_avoidance must be true or false, got {self.collision_avoidance!r}")
        if self.randomize_per not in ("frame", "sequence"):
            raise ValueError(f"{n}.randomize_per must be 'frame' or 'sequence', got {self.randomize_per!r}")
        if self.person_sprites is not None:
            ps = self.person_sprites
            if not isinstance(ps, dict) or not isinstance(ps.get("root"), (str, os.PathLike)):
                raise ValueError(f"{n}.person_sprites must be a dict with a 'root' folder of person crops, got {ps!r}")
            unknown = sorted(set(ps) - {"root", "fraction", "stride", "licence", "cache_dir", "recolour", "exclude"})
            if unknown:
                raise ValueError(f"{n}.person_sprites has unknown key(s) {unknown}")
            fr = ps.get("fraction", 1.0)
            if not _is_num(fr) or not 0.0 <= fr <= 1.0:
                raise ValueError(f"{n}.person_sprites.fraction must be in [0, 1], got {fr!r}")
            st = ps.get("stride", 2)
            if not _is_int(st) or st < 1:
                raise ValueError(f"{n}.person_sprites.stride must be an int >= 1, got {st!r}")
            if not isinstance(ps.get("recolour", False), bool):
                raise ValueError(f"{n}.person_sprites.recolour must be true or false, got {ps['recolour']!r}")
            ex = ps.get("exclude", [])
            if not isinstance(ex, (list, tuple)) or not all(isinstance(e, str) for e in ex):
                raise ValueError(f"{n}.person_sprites.exclude must be a list of file-name prefixes, got {ex!r}")
            if not Path(ps["root"]).expanduser().is_dir():
                raise ValueError(f"{n}.person_sprites.root {ps['root']} is not a folder of person crops")
        if self.background_dir is not None:
            if not isinstance(self.background_dir, (str, bytes)) and not hasattr(self.background_dir, "__fspath__"):
                raise ValueError(f"{n}.background_dir must be a folder path, got {self.background_dir!r}")
            try:
                list_background_images(self.background_dir)
            except ValueError as e:
                raise ValueError(f"{n}.{e}") from None
        return self

    def _camera(self, c, name) -> Camera:
        if isinstance(c, Camera):
            c = c.to_dict()
        if not isinstance(c, dict):
            raise ValueError(f"{name} must be a dict of camera parameters, got {c!r}")
        d = dict(c)
        d.setdefault("resolution", tuple(self.resolution))
        cam = Camera.from_dict(d, name)
        cam.validate(name)
        return cam

    def _camera_ranges(self, n) -> dict:
        if not isinstance(self.camera_ranges, dict):
            raise ValueError(f"{n}.camera_ranges must be a dict, got {self.camera_ranges!r}")
        out = {k: list(v) for k, v in DEFAULT_CAMERA_RANGES.items()}
        for k, v in self.camera_ranges.items():
            if k not in DEFAULT_CAMERA_RANGES:
                raise ValueError(f"{n}.camera_ranges.{k} is unknown; known: {sorted(DEFAULT_CAMERA_RANGES)}")
            if _is_num(v):
                v = [v, v]
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(x) for x in v) and v[0] <= v[1]):
                raise ValueError(f"{n}.camera_ranges.{k} must be a number or a [low, high] pair, got {v!r}")
            lo, hi = _CAMERA_LIMITS[k]
            if v[0] < lo or v[1] > hi:
                raise ValueError(f"{n}.camera_ranges.{k} must lie within [{lo}, {hi}], got {list(v)!r}")
            out[k] = [float(v[0]), float(v[1])]
        return out

    def _validate_props(self, n):
        p = self.props
        if p is None:
            return
        if isinstance(p, dict):
            for k, v in p.items():
                if k not in PROP_KINDS:
                    raise ValueError(f"{n}.props has unknown kind {k!r}; known: {PROP_KINDS}")
                if not _is_int(v) or not 0 <= v <= 1000:
                    raise ValueError(f"{n}.props[{k!r}] must be a count in [0, 1000], got {v!r}")
            if p.get("parked_vehicle", 0) and self.surface in ("indoor", "platform"):
                raise ValueError(f"{n}.props['parked_vehicle'] must be 0 for surface {self.surface!r}")
            return
        if isinstance(p, (list, tuple)):
            for i, d in enumerate(p):
                if not isinstance(d, dict) or "kind" not in d or "x" not in d or "y" not in d:
                    raise ValueError(f"{n}.props[{i}] must be a dict with 'kind', 'x' and 'y', got {d!r}")
                if d["kind"] not in PROP_KINDS or d["kind"] == "parked_vehicle":
                    raise ValueError(f"{n}.props[{i}].kind must be one of "
                                     f"{tuple(k for k in PROP_KINDS if k != 'parked_vehicle')}, got {d['kind']!r}")
                for a in ("x", "y", "yaw", "size"):
                    if a in d and not _is_num(d[a]):
                        raise ValueError(f"{n}.props[{i}].{a} must be a number, got {d[a]!r}")
                extra = set(d) - {"kind", "x", "y", "yaw", "size", "colour"}
                if extra:
                    raise ValueError(f"{n}.props[{i}] has unknown key(s) {sorted(extra)}")
            return
        raise ValueError(f"{n}.props must be None, a dict of counts or a list of prop dicts, got {p!r}")

    # ------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "cameras" and isinstance(v, (list, tuple)):
                v = [c.to_dict() if isinstance(c, Camera) else dict(c) for c in v]
                for c in v:
                    if "resolution" in c:
                        c["resolution"] = list(c["resolution"])
            elif isinstance(v, tuple):
                v = list(v)
            elif f.name == "background_dir" and v is not None:
                v = str(v)
            d[f.name] = _plain(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SceneConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"SceneConfig has unknown parameter(s) {unknown}; known: {sorted(known)}")
        kw = dict(d)
        if isinstance(kw.get("resolution"), list):
            kw["resolution"] = tuple(kw["resolution"])
        return cls(**kw)


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass
class Frame:
    """One rendered, labelled frame of one camera."""

    camera: int                 # 1-based camera id
    index: int                  # 0-based frame index
    time: float                 # seconds
    image: np.ndarray           # H x W x 3 uint8 RGB
    objects: list               # per-agent label dicts (see render.render_frame)
    params: dict                # every randomized value (JSON-serialisable)
    mask: np.ndarray | None = None  # H x W int32 instance ids (agents > 0, props < 0)


class Scene:
    """A deterministic multi-camera scene built from a :class:`SceneConfig`.

    The world, cameras and agents depend only on the config (and its seed);
    each frame's randomization on (seed, camera, frame), so frames can be
    rendered in any order and are bit-identical across processes.
    """

    def __init__(self, config: SceneConfig):
        if not isinstance(config, SceneConfig):
            raise ValueError(f"Scene needs a SceneConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        seed = config.seed
        self.ranges = validate_ranges(config.randomization)
        cam_ranges = config._camera_ranges("SceneConfig")
        E = config.world_size * 0.5
        if isinstance(config.cameras, (list, tuple)):
            self.cameras = [config._camera(c, f"SceneConfig.cameras[{i}]") for i, c in enumerate(config.cameras)]
        else:
            self.cameras = self._place_cameras(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5,))),
                                               config.cameras, cam_ranges, E)
        bg_images = list_background_images(config.background_dir) if config.background_dir is not None else None
        ceiling = max(4.0, max(c.height for c in self.cameras) + 1.5)
        rng_w = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        self.world = World(config.surface, config.world_size, rng_w, config.props, bg_images, ceiling,
                           keep_clear=[(c.x, c.y) for c in self.cameras])
        n_parked = 0
        if isinstance(config.props, dict):
            n_parked = int(config.props.get("parked_vehicle", 0))
        elif config.props is None:
            n_parked = DEFAULT_PROPS[config.surface].get("parked_vehicle", 0)
        rng_a = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
        self.people, self.vehicles = populate(rng_a, self.world, config.crowd_density, config.num_vehicles,
                                              n_parked)
        self.sprites = None
        if config.person_sprites is not None:
            ps = config.person_sprites
            bank = load_sprite_bank(ps["root"], int(ps.get("stride", 2)), ps.get("cache_dir"), ps.get("licence"),
                                    ps.get("exclude", ()))
            rng_s = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(9,)))
            assign = {}
            for p in self.people:
                pick = rng_s.random() < float(ps.get("fraction", 1.0))
                track, flip = int(rng_s.integers(len(bank.tracks))), bool(rng_s.random() < 0.5)
                hue = float(rng_s.uniform(0.0, 360.0))
                if pick and p.riding is None:
                    assign[p.identity] = (track, flip, round(hue, 2) if ps.get("recolour") else 0.0)
            self.sprites = PersonSprites(bank, assign)
        self.crowd = None
        if config.collision_avoidance and any(p.riding is None for p in self.people):
            self.crowd = CrowdSim(self.people, self.world, self.vehicles, config.start_time, config.fps)
        self._bg_offset = int(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(6,))).integers(1 << 16))

    # ------------------------------------------------------------------
    def _place_cameras(self, rng, n, r, E) -> list[Camera]:
        cams = []
        W, H = self.config.resolution
        road = self.config.surface == "road"
        a0 = float(rng.uniform(0, 2 * math.pi))
        for i in range(n):
            ang = a0 + 2 * math.pi * i / n + float(rng.uniform(-0.3, 0.3))
            rad = float(rng.uniform(0.55, 0.85)) * E
            x, y = rad * math.cos(ang), rad * math.sin(ang)
            if road:  # stand on a sidewalk, look along / across the street
                y = math.copysign(ROAD_HALF + float(rng.uniform(1.0, 3.0)), y if abs(y) > 1e-6 else 1.0)
                x = float(np.clip(x, -E + 2, E - 2))
            tx, ty = float(rng.uniform(-0.25, 0.25)) * E, float(rng.uniform(-0.25, 0.25)) * E
            if road:
                ty = float(rng.uniform(-ROAD_HALF - 3, ROAD_HALF + 3))
            h = float(rng.uniform(*r["height"]))
            tilt = float(rng.uniform(*r["tilt"]))
            hfov = float(rng.uniform(*r["hfov"]))
            k1 = float(rng.uniform(*r["k1"]))
            k2 = float(rng.uniform(*r["k2"]))
            roll = float(rng.uniform(*r["roll"]))
            yaw = math.degrees(math.atan2(ty - y, tx - x))
            cam = Camera(round(x, 3), round(y, 3), round(h, 3), round(yaw, 3), round(tilt, 3), round(hfov, 3),
                         (int(W), int(H)), round(k1, 4), round(k2, 4), round(roll, 3))
            cam.validate(f"cameras[{i}]")
            cams.append(cam)
        return cams

    @property
    def agents(self) -> list:
        return [*self.people, *self.vehicles]

    def camera_ids(self) -> list[int]:
        return list(range(1, len(self.cameras) + 1))

    def agent_states(self, frame_index: int) -> tuple[dict, dict]:
        """``(people, vehicles)`` states ``{identity: (x, y, heading_rad, distance)}`` at frame ``frame_index``
        (people on foot from the crowd simulation when ``collision_avoidance`` is on)."""
        if not _is_int(frame_index) or frame_index < 0:
            raise ValueError(f"frame_index must be an int >= 0, got {frame_index!r}")
        t = self.config.start_time + frame_index / float(self.config.fps)
        states = self.crowd.states(frame_index) if self.crowd is not None else None
        return agent_states(self.people, self.vehicles, t, states)

    def frame_params(self, camera_index: int, frame_index: int) -> dict:
        """The randomized values of one frame (without rendering it)."""
        c = self.config
        key = (3, camera_index) if c.randomize_per == "sequence" else (3, camera_index, frame_index)
        rng = np.random.default_rng(np.random.SeedSequence(c.seed, spawn_key=key))
        return sample_params(rng, self.ranges, c.surface)

    def render(self, camera_index: int, frame_index: int, with_mask: bool = True) -> Frame:
        """Render frame ``frame_index`` of camera ``camera_index`` (0-based index into ``cameras``)."""
        c = self.config
        if not 0 <= camera_index < len(self.cameras):
            raise ValueError(f"camera_index must be in [0, {len(self.cameras)}), got {camera_index!r}")
        if not _is_int(frame_index) or frame_index < 0:
            raise ValueError(f"frame_index must be an int >= 0, got {frame_index!r}")
        cam = self.cameras[camera_index]
        t = c.start_time + frame_index / float(c.fps)
        params = self.frame_params(camera_index, frame_index)
        light = light_from_params(params, c.surface)
        need_depth = bool(params["fog_visibility_m"]) or bool(params["night_ir"])
        fault = None
        if params["camera_fault"] != "none":
            key = (8, camera_index) if c.randomize_per == "sequence" else (8, camera_index, frame_index)
            fault = CameraFault(params["camera_fault"], np.random.default_rng(np.random.SeedSequence(c.seed,
                                                                                                     spawn_key=key)),
                                fault_light(light, params["time_of_day"]), cam.resolution, c.surface)
        if fault is not None and fault.kind == "turned_away":  # the scene is out of view: not rendered
            img, depth = fault.away_view()
            W, H = cam.resolution
            res = RenderResult(img, np.zeros((H, W), np.int32), [], [], depth if need_depth else None)
        else:
            states = self.crowd.states(frame_index) if self.crowd is not None else None
            res = render_frame(self.world, cam, self.people, self.vehicles, t, light,
                               image_index=self._bg_offset + camera_index, need_depth=need_depth,
                               hide=fault.hidden if fault is not None else None, states=states,
                               sprites=self.sprites)
            if self.sprites is not None:
                for o in res.objects:
                    a = self.sprites.assign.get(o["identity"]) if o["category"] == "person" else None
                    if a is not None:
                        o["appearance"] = self.sprites.bank.sprites[self.sprites.bank.tracks[a[0]][0]].file
                        if a[2]:
                            o["appearance_hue_shift"] = a[2]
        rng_e = np.random.default_rng(np.random.SeedSequence(c.seed, spawn_key=(4, camera_index, frame_index)))
        img = apply_effects(res.image, params, rng_e, res.depth, res.headlights, fault)
        objects, mask = res.objects, res.mask
        if fault is not None:
            params["camera_fault_params"] = fault.params
            params["camera_fault_labels"] = fault.labels
            if fault.labels == "dropped":
                objects = []
                mask[:] = 0
        if self.sprites is not None:
            params["person_sprites"] = self.sprites.bank.describe()
        params = {"camera": camera_index + 1, "frame": int(frame_index), "time": round(t, 6), **params,
                  "headlights_visible": len(res.headlights), "calibration": cam.to_dict()}
        return Frame(camera_index + 1, int(frame_index), round(t, 6), img, objects, params,
                     mask if with_mask else None)

    def frames(self, cameras=None, with_mask: bool = True) -> Iterator[Frame]:
        """All frames, time-major (frame 0 of every camera, then frame 1, ...)."""
        idx = range(len(self.cameras)) if cameras is None else [int(i) - 1 for i in cameras]
        for f in range(self.config.duration):
            for ci in idx:
                yield self.render(ci, f, with_mask)

    def __len__(self) -> int:
        return self.config.duration * len(self.cameras)

    def describe(self) -> dict:
        """World, cameras and agents as plain data."""
        return {
            "world": self.world.params,
            "cameras": [c.to_dict() for c in self.cameras],
            "people": [p.to_dict() for p in self.people],
            "vehicles": [v.to_dict() for v in self.vehicles],
        }
