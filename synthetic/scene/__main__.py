"""Command line: ``python -m synthetic.scene OUT [--config scene.yaml] [--formats coco mot reid] [overrides]``.

``--config`` reads a YAML/JSON dict of :class:`~synthetic.scene.SceneConfig` fields; the other options
override single fields. OUT must not exist; it is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .scene import SceneConfig
from .writers import write_coco, write_dataset, write_mot, write_reid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthetic.scene", description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder (must not exist)")
    ap.add_argument("--config", help="YAML or JSON file with SceneConfig fields")
    ap.add_argument("--formats", nargs="+", default=["coco", "mot", "reid"], choices=["coco", "mot", "reid"])
    ap.add_argument("--seed", type=int)
    ap.add_argument("--cameras", type=int, help="number of automatically placed cameras")
    ap.add_argument("--duration", type=int, help="frames per camera")
    ap.add_argument("--fps", type=float)
    ap.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    ap.add_argument("--surface", choices=["pavement", "road", "grass", "indoor", "platform"])
    ap.add_argument("--density", type=float, help="people per 100 m^2 of walkable ground")
    ap.add_argument("--vehicles", type=int)
    ap.add_argument("--background-dir", help="folder of real background images")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    d: dict = {}
    if a.config:
        text = Path(a.config).read_text(encoding="utf-8")
        d = json.loads(text) if a.config.endswith(".json") else (yaml.safe_load(text) or {})
    for key, val in (("seed", a.seed), ("cameras", a.cameras), ("duration", a.duration), ("fps", a.fps),
                     ("resolution", tuple(a.size) if a.size else None), ("surface", a.surface),
                     ("crowd_density", a.density), ("num_vehicles", a.vehicles),
                     ("background_dir", a.background_dir)):
        if val is not None:
            d[key] = val
    try:
        cfg = SceneConfig.from_dict(d).validate()
        if len(a.formats) == 1:
            fn = {"coco": write_coco, "mot": write_mot, "reid": write_reid}[a.formats[0]]
            out = fn(cfg, a.out, progress=not a.no_progress)
        else:
            out = write_dataset(cfg, a.out, a.formats, progress=not a.no_progress)
    except (ValueError, FileExistsError, PermissionError, NotADirectoryError) as e:
        ap.error(str(e))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
