"""Generated person re-id crops (the scene engine's Market-1501 writer) as a data source for the recipes.

``scenes`` independent scenes (seed ``seed + i``, surfaces cycled from ``surfaces``) are rendered by
several cameras each; people keep their identity across the cameras of their scene, and
``synthetic.scene.write_reid`` splits them into train and query/gallery identities. Generated once into
``cache_dir/v<version>-<hash of every parameter>`` (atomically: a folder that exists is complete), then
read like any Market-1501 folder. Identities and cameras are namespaced by scene (``s02-0007``,
``s02c1``), so people of different scenes never share an identity.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from vision.data.reid import MarketSource, ReadReport
from vision.data.samples import Sample
from synthetic.detection_source import _plain
from vision.errors import DataError
from vision.utils.io import atomic_directory


class SyntheticReidSource:
    """Re-id crops from the scene engine; ``kind`` synthetic, licence ``generated``."""

    kind = "synthetic"

    def __init__(self, cache_dir: str, seed: int = 0, scenes: int = 4, cameras: int = 3, duration: int = 40,
                 fps: float = 2.0, resolution: Sequence[int] = (640, 360),
                 surfaces: Sequence[str] = ("pavement", "road", "platform", "indoor"), world_size: float = 24.0,
                 crowd_density: float = 5.0, randomize_per: str = "sequence",
                 camera_ranges: dict[str, Any] | None = None, randomization: dict[str, Any] | None = None,
                 min_visible: float = 0.6, min_height: float = 64.0,
                 max_truncation: float = 0.1, train_fraction: float = 0.5, name: str = "reid_synthetic",
                 progress: bool = False, policy: str = "error", person_sprites: dict[str, Any] | None = None) -> None:
        from synthetic import __version__

        if scenes < 1:
            raise DataError(f"reid_synthetic: scenes must be >= 1, got {scenes}")
        if not surfaces:
            raise DataError("reid_synthetic: surfaces must not be empty")
        self.version = __version__
        self.params: dict[str, Any] = {
            "seed": int(seed), "scenes": int(scenes), "cameras": int(cameras), "duration": int(duration),
            "fps": float(fps), "resolution": [int(v) for v in resolution], "surfaces": [str(s) for s in surfaces],
            "world_size": float(world_size), "crowd_density": float(crowd_density), "randomize_per": randomize_per,
            "camera_ranges": dict(_plain(camera_ranges) or {}),
            "randomization": dict(_plain(randomization) or {}),
            "writer": {"min_visible": float(min_visible), "min_height": float(min_height),
                       "max_truncation": float(max_truncation), "train_fraction": float(train_fraction)},
        }
        self._sprites = None
        self.licence = "generated"
        if person_sprites is not None:  # real-appearance people (recoloured: many identities per tracklet)
            from synthetic.sources import PersonSprites

            self._sprites = PersonSprites(person_sprites, cache_dir, name)
            self.params["person_sprites"] = self._sprites.params
            self.licence = self._sprites.licence
        digest = hashlib.sha256(json.dumps({"version": __version__, **self.params}, sort_keys=True).encode())
        self.root = Path(cache_dir).expanduser() / f"v{__version__}-{digest.hexdigest()[:12]}"
        self.name = name
        self.progress = progress
        self.policy = policy
        self.report = ReadReport(name, policy)
        self._configs()  # check every scene config now, before anything is rendered

    def _configs(self) -> list:
        from synthetic.scene import SceneConfig

        p = self.params
        out = []
        for i in range(p["scenes"]):
            cfg = SceneConfig(seed=p["seed"] + i, cameras=p["cameras"], resolution=tuple(p["resolution"]),
                              duration=p["duration"], fps=p["fps"], surface=p["surfaces"][i % len(p["surfaces"])],
                              world_size=p["world_size"], crowd_density=p["crowd_density"], num_vehicles=0,
                              camera_ranges=dict(p["camera_ranges"]),
                              randomization=p["randomization"], randomize_per=p["randomize_per"],
                              person_sprites=dict(self._sprites.scene) if self._sprites else None)
            try:
                out.append(cfg.validate())
            except ValueError as e:
                raise DataError(f"reid_synthetic scene {i}: {e}") from e
        return out

    def ensure(self) -> Path:
        """Generate the crops unless this exact parameter set is cached already."""
        if self.root.is_dir():
            return self.root
        from synthetic.scene import write_reid

        try:
            with atomic_directory(self.root) as tmp:
                counts = {}
                for i, cfg in enumerate(self._configs()):
                    out = write_reid(cfg, tmp / f"scene{i:02d}", progress=self.progress, **self.params["writer"])
                    counts[f"scene{i:02d}"] = (yaml.safe_load((out / "card.yaml").read_text()) or {}).get("counts")
                card = {"name": self.name, "task": "reid", "source": f"synthetic.scene {self.version}",
                        "generator": "synthetic.scene", "generator_version": self.version,
                        "licence": self.licence,
                        "real": False, "format": "Market-1501 layout per scene (sceneNN/)",
                        "generation": self.params, "counts": counts}
                (tmp / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        except FileExistsError:
            if not self.root.is_dir():
                raise
        except OSError as e:
            raise DataError(f"{self.root}: cannot write the generated re-id dataset ({e})") from e
        return self.root

    def load(self) -> list[Sample]:
        self.ensure()
        self.report = ReadReport(self.name, self.policy)
        out: list[Sample] = []
        for i in range(self.params["scenes"]):
            tag = f"s{i:02d}"
            reader = MarketSource(str(self.root / f"scene{i:02d}"), name=self.name, kind="synthetic",
                                  policy=self.policy, validate_images=False, licence=self.licence)
            for s in reader.load():
                ident, cam = s.meta["identity"], s.meta["camera"]
                meta = {**s.meta, "identity": f"{tag}-{ident}", "camera": f"{tag}c{cam}", "scene": i,
                        "junk": s.meta["junk"], "distractor": s.meta["distractor"]}
                out.append(dataclasses.replace(s, label=f"{self.name}:{tag}-{ident}",
                                               relpath=f"scene{i:02d}/{s.relpath}", meta=meta))
            self.report.skipped += reader.report.skipped
            self.report.ignored += reader.report.ignored
        self.report.counts = {"images": len(out), "identities": len({s.label for s in out}),
                              "cameras": len({s.meta["camera"] for s in out})}
        return out

    def card(self) -> dict[str, Any]:
        self.ensure()
        card = yaml.safe_load((self.root / "card.yaml").read_text()) or {}
        card["name"] = self.name
        card["_root"] = str(self.root)
        card["read_report"] = self.report.to_dict()
        return card
