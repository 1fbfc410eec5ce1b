"""Generated datasets as data sources for the recipes (generated once into a cache, then read)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vision.data.readers import ImageFolderSource
from vision.data.samples import Sample
from vision.errors import DataError


class CameraHealthSource:
    """Camera-health frames (``synthetic.camera_health``), cached under ``cache_dir`` by their parameters."""

    def __init__(self, cache_dir: str, num_per_class: int = 200, size: Sequence[int] = (160, 120), seed: int = 0,
                 name: str = "camera_health", progress: bool = True) -> None:
        from synthetic import __version__
        from synthetic import camera_health

        self.gen = camera_health
        self.num_per_class = int(num_per_class)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.progress = progress
        self.root = Path(cache_dir).expanduser() / (
            f"v{__version__}-n{self.num_per_class}-{self.size[0]}x{self.size[1]}-seed{self.seed}")
        self._folder = ImageFolderSource(str(self.root), name=name, classes=list(camera_health.CLASSES),
                                         validate_images=False)

    kind = "synthetic"

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
                                          seed=self.seed, progress=self.progress)
            except FileExistsError:
                pass  # another process finished the same generation first: identical content
            except OSError as e:
                raise DataError(f"{self.root}: cannot write the generated dataset ({e})") from e
        return self.root

    def load(self) -> list[Sample]:
        self.ensure()
        return self._folder.load()

    def card(self) -> dict[str, Any]:
        self.ensure()
        return self._folder.card()
