"""Vectorised anti-aliasing helpers shared by the generators (procedural ground markings)."""
from __future__ import annotations

import numpy as np


def stripe_coverage(d, w, fp):
    """Coverage of a stripe of width ``w`` at distance ``d`` for pixel footprint ``fp``.

    The box-filtered (anti-aliased) profile of a stripe; all arguments are arrays or scalars in
    the same world unit.
    """
    c = ((w + fp) * 0.5 - d) / fp
    np.clip(c, 0.0, 1.0, out=c)
    return np.minimum(c, np.minimum(w / fp, 1.0), out=c)


def periodic_distance(v, period, offset=0.0):
    """Distance to the nearest multiple of ``period`` (shifted by ``offset``)."""
    t = (v - offset) * (1.0 / period) + 0.5
    t -= np.floor(t)
    t -= 0.5
    return np.abs(t, out=t) * period
