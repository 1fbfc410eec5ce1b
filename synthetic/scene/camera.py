"""Calibrated pin-hole surveillance camera with optional radial lens distortion.

World frame: metres, ``x``/``y`` on the ground plane, ``z`` up (the ground is
``z = 0``). Camera frame: OpenCV convention (``x`` right, ``y`` down, ``z``
along the optical axis), so ``depth`` is the camera-frame ``z``.

``yaw`` is the viewing direction on the ground plane in degrees,
counter-clockwise from the world ``+x`` axis; ``tilt`` is the down-angle of the
optical axis below the horizon (0 = looking at the horizon, 90 = straight down,
exclusive); ``roll`` rotates the image about the optical axis.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from functools import cached_property

import numpy as np

__all__ = ["Camera", "MIN_HEIGHT_M", "MAX_HEIGHT_M", "MIN_RESOLUTION", "MAX_RESOLUTION"]

MIN_HEIGHT_M = 2.5
MAX_HEIGHT_M = 12.0
MIN_RESOLUTION = (32, 32)
MAX_RESOLUTION = (4096, 4096)
_FOV_RANGE = (10.0, 170.0)
_K_MAX = 1.0


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(eq=True)
class Camera:
    """A calibrated camera looking at the ground plane.

    Typical surveillance values: height 2.5-12 m, tilt 10-60 deg, hfov 40-100
    deg, resolution 640x360 .. 1920x1080 (any size from 32x32 to 4096x4096 is
    accepted). ``k1``/``k2`` are the radial distortion coefficients of
    ``r_d = r (1 + k1 r^2 + k2 r^4)`` on normalised image coordinates
    (negative ``k1``: barrel distortion, typical of wide surveillance lenses).
    """

    x: float = 0.0
    y: float = 0.0
    height: float = 6.0
    yaw: float = 0.0
    tilt: float = 30.0
    hfov: float = 60.0
    resolution: tuple[int, int] = (640, 360)
    k1: float = 0.0
    k2: float = 0.0
    roll: float = 0.0

    # ------------------------------------------------------------------ checks
    def validate(self, name: str = "camera") -> "Camera":
        """Raise ValueError naming the offending parameter; returns self."""
        for f in ("x", "y", "height", "yaw", "tilt", "hfov", "k1", "k2", "roll"):
            if not _is_num(getattr(self, f)):
                raise ValueError(f"{name}.{f} must be a finite number, got {getattr(self, f)!r}")
        if not MIN_HEIGHT_M <= self.height <= MAX_HEIGHT_M:
            raise ValueError(
                f"{name}.height must be between {MIN_HEIGHT_M} and {MAX_HEIGHT_M} m above the ground, "
                f"got {self.height!r}")
        if not 0.0 <= self.tilt < 90.0:
            raise ValueError(f"{name}.tilt (down-angle) must be in [0, 90) degrees, got {self.tilt!r}")
        if not _FOV_RANGE[0] < self.hfov < _FOV_RANGE[1]:
            raise ValueError(f"{name}.hfov must be in ({_FOV_RANGE[0]:g}, {_FOV_RANGE[1]:g}) degrees, "
                             f"got {self.hfov!r}")
        r = self.resolution
        ok = (isinstance(r, (tuple, list)) and len(r) == 2
              and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in r))
        if not ok:
            raise ValueError(f"{name}.resolution must be two ints (width, height), got {r!r}")
        if not (MIN_RESOLUTION[0] <= r[0] <= MAX_RESOLUTION[0] and MIN_RESOLUTION[1] <= r[1] <= MAX_RESOLUTION[1]):
            raise ValueError(f"{name}.resolution must be between {MIN_RESOLUTION[0]}x{MIN_RESOLUTION[1]} and "
                             f"{MAX_RESOLUTION[0]}x{MAX_RESOLUTION[1]} pixels, got {r[0]}x{r[1]}")
        if abs(self.k1) > _K_MAX or abs(self.k2) > _K_MAX:
            raise ValueError(f"{name}.k1/k2 (radial distortion) must be within +-{_K_MAX}, "
                             f"got k1={self.k1!r} k2={self.k2!r}")
        if abs(self.roll) > 45.0:
            raise ValueError(f"{name}.roll must be within +-45 degrees, got {self.roll!r}")
        # the distortion polynomial must stay monotonic over the image
        rmax = self._r_max_undistorted()
        rr = np.linspace(0.0, rmax, 64)
        rd = rr * (1 + self.k1 * rr ** 2 + self.k2 * rr ** 4)
        if np.any(np.diff(rd) <= 0):
            raise ValueError(f"{name}.k1/k2 fold the image over (distortion not monotonic within the field "
                             f"of view): k1={self.k1!r} k2={self.k2!r}")
        return self

    def _r_max_undistorted(self) -> float:
        W, H = self.resolution
        return math.hypot(W * 0.5, H * 0.5) / self.fx * 1.05

    # --------------------------------------------------------------- matrices
    @property
    def width(self) -> int:
        return int(self.resolution[0])

    @property
    def image_height(self) -> int:
        return int(self.resolution[1])

    @property
    def fx(self) -> float:
        return (self.resolution[0] * 0.5) / math.tan(math.radians(self.hfov) * 0.5)

    @property
    def vfov(self) -> float:
        """Vertical field of view in degrees (undistorted)."""
        return math.degrees(2.0 * math.atan(self.resolution[1] * 0.5 / self.fx))

    @property
    def K(self) -> np.ndarray:
        """3x3 intrinsic matrix (square pixels, centred principal point)."""
        f = self.fx
        return np.array([[f, 0.0, self.resolution[0] * 0.5], [0.0, f, self.resolution[1] * 0.5], [0.0, 0.0, 1.0]])

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.height], float)

    @property
    def R(self) -> np.ndarray:
        """World-to-camera rotation (rows: camera x/right, y/down, z/forward in world coordinates)."""
        return self._R.copy()

    @cached_property
    def _R(self) -> np.ndarray:
        ya, ti, ro = math.radians(self.yaw), math.radians(self.tilt), math.radians(self.roll)
        d = np.array([math.cos(ti) * math.cos(ya), math.cos(ti) * math.sin(ya), -math.sin(ti)])
        r = np.array([math.sin(ya), -math.cos(ya), 0.0])
        dn = np.cross(d, r)
        r2 = math.cos(ro) * r + math.sin(ro) * dn
        dn2 = -math.sin(ro) * r + math.cos(ro) * dn
        R = np.stack([r2, dn2, d])
        R.setflags(write=False)
        return R

    def __setattr__(self, key, value):
        # geometry is cached: drop the cache when a parameter changes
        if key in ("yaw", "tilt", "roll"):
            self.__dict__.pop("_R", None)
        self.__dict__.pop("_ray_cache", None)
        object.__setattr__(self, key, value)

    @property
    def t(self) -> np.ndarray:
        return -self._R @ self.position

    @property
    def extrinsics(self) -> np.ndarray:
        """3x4 ``[R | t]`` world-to-camera matrix."""
        return np.hstack([self._R, self.t[:, None]])

    @property
    def P(self) -> np.ndarray:
        """3x4 projection matrix ``K [R | t]`` (ignores lens distortion)."""
        return self.K @ self.extrinsics

    # ------------------------------------------------------------- projection
    def distort(self, xn: np.ndarray, yn: np.ndarray):
        if self.k1 == 0.0 and self.k2 == 0.0:
            return xn, yn
        r2 = xn * xn + yn * yn
        # beyond the calibrated field the polynomial is meaningless: clamp
        rm = self._r_max_undistorted()
        r2 = np.minimum(r2, rm * rm)
        s = 1.0 + r2 * (self.k1 + self.k2 * r2)
        return xn * s, yn * s

    def undistort(self, xd: np.ndarray, yd: np.ndarray, iters: int = 12):
        if self.k1 == 0.0 and self.k2 == 0.0:
            return xd, yd
        xu, yu = xd, yd
        for _ in range(iters):
            r2 = xu * xu + yu * yu
            s = 1.0 + r2 * (self.k1 + self.k2 * r2)
            xu, yu = xd / s, yd / s
        return xu, yu

    def to_camera(self, points_world) -> np.ndarray:
        P = np.asarray(points_world, float).reshape(-1, 3)
        return (P - self.position) @ self._R.T

    def project(self, points_world) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (N x 3) to pixels.

        Returns ``(uv, depth)``: N x 2 pixel coordinates (pixel centres at
        ``i + 0.5``) and the N camera-frame depths. Points with ``depth <= 0``
        are behind the camera and their ``uv`` is NaN.
        """
        Pc = self.to_camera(points_world)
        z = Pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(z > 1e-9, 1.0 / z, np.nan)
        xn, yn = self.distort(Pc[:, 0] * inv, Pc[:, 1] * inv)
        f = self.fx
        uv = np.stack([f * xn + self.resolution[0] * 0.5, f * yn + self.resolution[1] * 0.5], -1)
        return uv, z

    def pixel_rays(self, u, v) -> np.ndarray:
        """World-frame ray directions (camera z component = 1) through pixels (u, v)."""
        u = np.asarray(u, float)
        v = np.asarray(v, float)
        f = self.fx
        xn, yn = self.undistort((u - self.resolution[0] * 0.5) / f, (v - self.resolution[1] * 0.5) / f)
        dc = np.stack([xn, yn, np.ones_like(xn)], -1)
        return dc @ self._R

    def ground_point(self, u, v):
        """Back-project pixel(s) onto the ground plane ``z = 0``.

        Scalars give ``(x, y)`` (or ``None`` at/above the horizon); arrays give
        an ``(..., 2)`` array with NaN where the ray misses the ground.
        """
        scalar = np.ndim(u) == 0 and np.ndim(v) == 0
        d = self.pixel_rays(u, v)
        dz = d[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(dz < -1e-9, -self.height / dz, np.nan)
        g = np.stack([self.x + t * d[..., 0], self.y + t * d[..., 1]], -1)
        if scalar:
            return None if not np.isfinite(g).all() else (float(g[0]), float(g[1]))
        return g

    def horizon_v(self, u: float | None = None) -> float:
        """Image row of the horizon at column ``u`` (centre column by default; ignores distortion)."""
        W, H = self.resolution
        f = self.fx
        u = W * 0.5 if u is None else u
        # rays (xn, yn, 1) @ R have zero world z on the horizon
        R = self._R
        xn = (u - W * 0.5) / f
        # z_w = xn R[0,2] + yn R[1,2] + R[2,2] = 0
        if abs(R[1, 2]) < 1e-12:
            return math.inf
        yn = -(xn * R[0, 2] + R[2, 2]) / R[1, 2]
        return f * yn + H * 0.5

    # ------------------------------------------------------------ conversion
    def to_dict(self) -> dict:
        d = asdict(self)
        d["resolution"] = [int(self.resolution[0]), int(self.resolution[1])]
        return d

    @classmethod
    def from_dict(cls, d: dict, name: str = "camera") -> "Camera":
        if isinstance(d, Camera):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"{name} must be a dict of camera parameters, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{name} has unknown parameter(s) {unknown}; known: {sorted(known)}")
        kw = dict(d)
        if "resolution" in kw and isinstance(kw["resolution"], list):
            kw["resolution"] = tuple(kw["resolution"])
        return cls(**kw)

    @classmethod
    def look_at(cls, position_xy, height: float, target_xy, hfov: float = 60.0,
                resolution=(640, 360), k1: float = 0.0, k2: float = 0.0, roll: float = 0.0) -> "Camera":
        """Camera at ``position_xy``/``height`` whose optical axis hits the ground at ``target_xy``."""
        dx, dy = target_xy[0] - position_xy[0], target_xy[1] - position_xy[1]
        dist = math.hypot(dx, dy)
        yaw = math.degrees(math.atan2(dy, dx))
        tilt = math.degrees(math.atan2(height, max(dist, 1e-6)))
        return cls(float(position_xy[0]), float(position_xy[1]), float(height), yaw, min(tilt, 89.0), hfov,
                   tuple(resolution), k1, k2, roll)
