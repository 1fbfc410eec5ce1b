"""Scene-engine detection data as a source for the detection recipe.

A set of independent scenes (each its own seed, surface, crowd density and cameras, domain randomized
per frame) is generated once into ``cache_dir`` (a folder named by a hash of every parameter, written
atomically) as one COCO file, then read with :func:`vision.data.detection.read_coco` like any real
COCO set. Every image keeps its provenance (generator, version, scene seed, every randomized
parameter) in ``sample.meta`` plus a coarse ``condition`` (day, dusk, night, night_ir, rain, snow, fog)
for sliced metrics.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vision.data.boxes import DetectionSample
from vision.errors import DataError

#: the engine's categories mapped onto the recipe's classes by default
DEFAULT_LABEL_MAP = {"person": "person", "car": "vehicle", "van": "vehicle", "bike": "vehicle"}


def _plain(value: Any) -> Any:
    """Hydra hands over DictConfig/ListConfig: plain dicts and lists for hashing and the scene config."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def condition_of(params: Mapping[str, Any]) -> str:
    """A coarse condition name for one frame's randomized parameters (weather wins over light)."""
    for key in ("snow", "rain", "fog"):
        if params.get(key):
            return key
    if params.get("night_ir"):
        return "night_ir"
    return str(params.get("time_of_day") or "unknown")


class SceneDetectionSource:
    """``scenes`` generated scenes of ``cameras`` x ``frames`` frames each.

    Per scene ``i`` (seed ``seed * 1000 + i``) the surface cycles through ``surfaces`` and the crowd
    density and vehicle count are drawn from ``crowd_density`` / ``num_vehicles`` ranges; camera poses
    come from the engine's ranges (``camera_ranges`` overrides them). ``label_map`` maps engine
    categories to class names (a category mapped to ``null`` is dropped from the labels).
    """

    kind = "synthetic"

    def __init__(self, cache_dir: str, scenes: int = 8, cameras: int = 2, frames: int = 20,
                 resolution: Sequence[int] = (640, 360), seed: int = 0,
                 surfaces: Sequence[str] = ("road", "pavement", "grass", "indoor", "platform"),
                 crowd_density: Sequence[float] = (0.5, 4.0), num_vehicles: Sequence[int] = (0, 6),
                 fps: float = 2.0, world_size: float = 50.0, camera_ranges: Mapping[str, Any] | None = None,
                 randomization: Mapping[str, Any] | None = None, label_map: Mapping[str, str | None] | None = None,
                 min_visible_fraction: float = 0.2, name: str = "synthetic_scenes", progress: bool = True,
                 person_sprites: Mapping[str, Any] | None = None) -> None:
        from synthetic import __version__

        if scenes < 1 or cameras < 1 or frames < 1:
            raise DataError(f"{name}: scenes, cameras and frames must be >= 1, got {scenes}, {cameras}, {frames}")
        if len(crowd_density) != 2 or len(num_vehicles) != 2:
            raise DataError(f"{name}: crowd_density and num_vehicles are [low, high] ranges")
        self.name = name
        self.version = __version__
        self.params = {
            "scenes": int(scenes), "cameras": int(cameras), "frames": int(frames),
            "resolution": [int(v) for v in resolution], "seed": int(seed), "surfaces": [str(v) for v in surfaces],
            "crowd_density": [float(v) for v in crowd_density], "num_vehicles": [int(v) for v in num_vehicles],
            "fps": float(fps), "world_size": float(world_size), "camera_ranges": dict(_plain(camera_ranges) or {}),
            "randomization": dict(_plain(randomization) or {}),
        }
        self._sprites = None
        self.licence = "generated"
        if person_sprites is not None:  # real-appearance people; the key covers the crops' names and sizes
            from synthetic.sources import PersonSprites

            self._sprites = PersonSprites(person_sprites, cache_dir, name)
            self.params["person_sprites"] = self._sprites.params
            self.licence = self._sprites.licence
        self.label_map = dict(DEFAULT_LABEL_MAP if label_map is None else _plain(label_map))
        self.min_visible_fraction = float(min_visible_fraction)
        self.progress = progress
        digest = hashlib.sha256(json.dumps({"v": __version__, **self.params}, sort_keys=True).encode()).hexdigest()[:12]
        self.root = Path(cache_dir).expanduser() / f"v{__version__}-scenes{scenes}x{cameras}x{frames}-{digest}"
        self.scene_configs()  # check every parameter now, before anything is generated

    def scene_configs(self) -> list:
        from synthetic.scene import SceneConfig

        p = self.params
        rng = np.random.default_rng(p["seed"])
        out = []
        for i in range(p["scenes"]):
            surface = p["surfaces"][i % len(p["surfaces"])]
            density = float(rng.uniform(*p["crowd_density"]))
            vehicles = 0 if surface in ("indoor", "platform") else int(rng.integers(p["num_vehicles"][0],
                                                                                   p["num_vehicles"][1] + 1))
            cfg = SceneConfig(seed=p["seed"] * 1000 + i, cameras=p["cameras"], resolution=tuple(p["resolution"]),
                              duration=p["frames"], fps=p["fps"],
                              world_size=p.get("world_size", 50.0), surface=surface, crowd_density=round(density, 3),
                              num_vehicles=vehicles, camera_ranges=dict(p["camera_ranges"]),
                              randomization=dict(p["randomization"]),
                              person_sprites=dict(self._sprites.scene) if self._sprites else None)
            try:
                out.append(cfg.validate())
            except ValueError as e:
                raise DataError(f"{self.name}: scene {i}: {e}") from e
        return out

    # -- generation ------------------------------------------------------------------------------
    def ensure(self) -> Path:
        if (self.root / "annotations.json").is_file():
            return self.root
        from synthetic.scene import write_coco

        tmp = self.root.parent / f".{self.root.name}.tmp-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            merged: dict[str, Any] = {"images": [], "annotations": []}
            configs = self.scene_configs()
            for i, cfg in enumerate(configs):
                sub = f"scene_{i:03d}"
                if self.progress:
                    print(f"{self.name}: generating scene {i + 1}/{len(configs)} ({cfg.surface})", flush=True)
                write_coco(cfg, tmp / sub)
                doc = json.loads((tmp / sub / "annotations.json").read_text())
                merged.setdefault("categories", doc["categories"])
                merged.setdefault("licenses", doc.get("licenses", []))
                merged.setdefault("info", doc.get("info", {}))
                id_map = {}
                for im in doc["images"]:
                    new_id = len(merged["images"]) + 1
                    id_map[im["id"]] = new_id
                    params = im.get("params") or {}
                    merged["images"].append({**im, "id": new_id, "file_name": f"{sub}/{im['file_name']}",
                                             "scene": i, "scene_seed": cfg.seed, "surface": cfg.surface,
                                             "crowd_density": cfg.crowd_density, "condition": condition_of(params),
                                             "generator_version": self.version,
                                             "licence": self.licence})
                for a in doc["annotations"]:
                    merged["annotations"].append({**a, "id": len(merged["annotations"]) + 1,
                                                  "image_id": id_map[a["image_id"]]})
                (tmp / sub / "annotations.json").unlink()
            (tmp / "annotations.json").write_text(json.dumps(merged, sort_keys=True, separators=(",", ":")))
            (tmp / "generation.json").write_text(json.dumps(self.params, indent=1, sort_keys=True))
            try:
                os.replace(tmp, self.root)
            except OSError:
                if not (self.root / "annotations.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same generation first
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"{self.root}: cannot write the generated dataset ({e})") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.root

    def load(self) -> list[DetectionSample]:
        from vision.data.boxes import Box
        from vision.data.detection import read_coco

        self.ensure()
        samples = read_coco(self.root / "annotations.json", self.root, source=self.name, check_images=False)
        out = []
        for s in samples:
            boxes = []
            for b in s.boxes:
                label = self.label_map.get(b.label, b.label)
                if label is None:
                    continue
                attrs = dict(b.attrs)
                vis = attrs.get("visible_fraction")
                if vis is not None and float(vis) < self.min_visible_fraction:
                    attrs["ignore"] = True  # barely visible: neither a positive nor a negative
                boxes.append(Box(b.x1, b.y1, b.x2, b.y2, label, b.identity, attrs))
            meta = {**s.meta, "generator": "synthetic.scene", "kind": "synthetic"}
            out.append(DetectionSample(s.path, s.width, s.height, boxes, s.source, s.relpath, meta))
        return out

    def card(self) -> dict[str, Any]:
        self.ensure()
        n_img = n_box = 0
        doc = json.loads((self.root / "annotations.json").read_text())
        n_img, n_box = len(doc["images"]), len(doc["annotations"])
        return {"name": self.name, "task": "detection", "source": f"synthetic.scene {self.version}",
                "licence": self.licence, "real": False, "format": "COCO (scene engine)",
                "counts": {"images": n_img, "boxes": n_box}, "generation": self.params,
                "label_map": self.label_map, "location": {"local": str(self.root)}}
