"""Generated datasets as data sources for the recipes.

Two modes with the same sample keys (so splits, metrics and checkpoints agree between them):
- cached (default): generated once into ``cache_dir`` by its parameters, then read like any folder;
- ``on_the_fly=True``: nothing is written; frames are rendered from their seeds inside the
  dataloader workers when a batch needs them, so generation scales with workers and nodes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vision.data.readers import ImageFolderSource
from vision.data.samples import Sample
from vision.errors import DataError

GENERATED_SCHEME = "generated://"


class PersonSprites:
    """A generated source's ``person_sprites`` option (real-appearance people, see
    :mod:`synthetic.scene.sprites`), checked before anything is generated. ``params`` (with the crops'
    fingerprint) belongs in the source's cache key; ``scene`` is what each ``SceneConfig`` gets; ``licence``
    is the generated data's licence."""

    def __init__(self, person_sprites: Any, cache_dir: str, name: str) -> None:
        from synthetic.detection_source import _plain
        from synthetic.scene.sprites import generated_licence, sprite_tracks

        ps = dict(_plain(person_sprites))
        ps.setdefault("cache_dir", str(Path(cache_dir).expanduser() / "sprites"))
        root = Path(str(ps.get("root", ""))).expanduser()
        if not ps.get("root") or not root.is_dir():
            raise DataError(f"{name}: person_sprites.root {ps.get('root')!r} is not a folder of person crops")
        try:
            _, fingerprint = sprite_tracks(root, int(ps.get("stride", 2)), ps.get("exclude", ()))
        except ValueError as e:
            raise DataError(f"{name}: {e}") from e
        self.scene = ps
        self.params = {**{k: v for k, v in ps.items() if k != "cache_dir"}, "fingerprint": fingerprint}
        self.licence = generated_licence(ps)  # "generated; person appearance: <the crops' licence>"


class CameraHealthSource:
    """Camera-health frames (``synthetic.camera_health``)."""

    kind = "synthetic"

    def __init__(self, cache_dir: str, num_per_class: int = 200, size: Sequence[int] = (160, 120), seed: int = 0,
                 name: str = "camera_health", progress: bool = True, on_the_fly: bool = False,
                 base: str = "procedural", classes: Sequence[str] | None = None) -> None:
        from synthetic import __version__
        from synthetic import camera_health

        self.gen = camera_health
        self.version = __version__
        self.num_per_class = int(num_per_class)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.progress = progress
        self.on_the_fly = on_the_fly
        if base not in camera_health.BASES:
            raise DataError(f"camera_health: base must be one of {camera_health.BASES}, got {base!r}")
        self.base = base
        self.classes = tuple(classes) if classes else tuple(camera_health.CLASSES)
        unknown = sorted(set(self.classes) - set(camera_health.ALL_CLASSES))
        if unknown or len(set(self.classes)) != len(self.classes):
            raise DataError(f"camera_health: classes must be distinct names among {camera_health.ALL_CLASSES}, "
                            f"got {list(self.classes)}")
        if self.num_per_class < 1:
            raise DataError(f"camera_health: num_per_class must be >= 1, got {num_per_class}")
        import hashlib

        tag = hashlib.sha256(",".join(self.classes).encode()).hexdigest()[:8]  # the class list is part of the key
        self.root = Path(cache_dir).expanduser() / (
            f"v{__version__}-{base}-n{self.num_per_class}-{self.size[0]}x{self.size[1]}-seed{self.seed}-c{tag}")
        self._folder = ImageFolderSource(str(self.root), name=name, classes=list(self.classes),
                                         validate_images=False)

    @property
    def name(self) -> str:
        return self._folder.name

    @name.setter
    def name(self, value: str) -> None:
        self._folder.name = value

    def ensure(self) -> Path:
        if not self.root.is_dir():
            try:
                self.gen.generate_dataset(self.root, num_per_class=self.num_per_class, size=self.size,
                                          seed=self.seed, progress=self.progress, base=self.base,
                                          classes=self.classes)
            except FileExistsError:
                pass  # another process finished the same generation first: identical content
            except OSError as e:
                raise DataError(f"{self.root}: cannot write the generated dataset ({e})") from e
        return self.root

    def load(self) -> list[Sample]:
        if not self.on_the_fly:
            self.ensure()
            return self._folder.load()
        out = []
        for label in self.classes:
            ci = self.gen.ALL_CLASSES.index(label)  # as generate_dataset seeds it: same keys, same pixels
            for i in range(self.num_per_class):
                rel = f"{label}/{label}_{i:05d}.png"  # the key the cached files would have
                seed = self.gen.derive_seed(self.seed, ci, i)
                meta = {"generator": self.gen.GENERATOR_NAME, "generator_version": self.version, "seed": seed,
                        "licence": "generated", "on_the_fly": True}
                out.append(Sample(f"{GENERATED_SCHEME}{self.name}/{rel}", label, self.name, rel, meta))
        return out

    def read(self, sample: Sample) -> np.ndarray:
        """The frame of a sample: rendered from its seed (on the fly) or read from the cache."""
        if sample.path.startswith(GENERATED_SCHEME):
            return self.gen.render_frame(sample.label, int(sample.meta["seed"]), self.size, self.base)[0]
        from vision.runtime.preprocess import read_image

        return read_image(sample.path)

    def card(self) -> dict[str, Any]:
        if not self.on_the_fly:
            self.ensure()
            return self._folder.card()
        return {"name": self.name, "task": "classification", "format": "rendered on the fly",
                "source": f"{self.gen.GENERATOR_NAME} {self.version}", "licence": "generated", "real": False,
                "classes": list(self.classes),
                "counts": {c: self.num_per_class for c in self.classes},
                "generation": {"num_per_class": self.num_per_class, "size": list(self.size), "seed": self.seed,
                               "base": self.base}}
