"""Refined scene-engine frames as a detection source: ``data=people_refined data.sources.synthetic.refiner=CKPT``.

:class:`RefinedSceneSource` takes every parameter of :class:`~synthetic.detection_source.SceneDetectionSource`
plus ``refiner`` (a checkpoint of ``python -m synthetic.refine train``) and ``device`` (where the frames are
refined: ``cpu``, ``cuda`` or ``auto``). It generates the raw scenes into the
cache as usual, refines them once into ``<cache>/refined-<raw folder>-<checkpoint sha256[:12]>`` (atomic;
reused afterwards, a new checkpoint gives a new folder) and reads that COCO set: same boxes, same splits
(whole scenes), the refiner's run id and checkpoint hash in every sample's meta. Its kind is ``refined``,
which the mixer treats like synthetic data (``data.mix.synthetic_fraction``); slices report it apart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from synthetic.detection_source import SceneDetectionSource
from vision.errors import ConfigError, DataError


class RefinedSceneSource(SceneDetectionSource):
    kind = "refined"

    def __init__(self, refiner: str | None = None, cache_dir: str = ".cache/vision/scenes", batch_size: int = 4,
                 device: str = "cpu", **scene: Any) -> None:
        from synthetic.refine.apply import Refiner

        scene.setdefault("name", "refined_scenes")
        super().__init__(cache_dir, **scene)
        if not refiner:
            raise ConfigError(f"{self.name}: no refiner checkpoint: set data.sources.<name>.refiner=CKPT (train one "
                              f"with python -m synthetic.refine train)")
        self.raw = SceneDetectionSource(cache_dir, **scene)
        self.refiner = Refiner(refiner, device)  # a missing or foreign checkpoint fails here, before any generation
        w, h = self.params["resolution"]
        self.refiner.check_size(w, h, where=f"{self.name} (scenes rendered at resolution {w}x{h})")
        self.batch_size = int(batch_size)
        raw_root = self.raw.root
        self.root = raw_root.parent / f"refined-{raw_root.name}-{self.refiner.sha256[:12]}"

    def ensure(self) -> Path:
        from synthetic.refine.apply import refine_dataset

        if (self.root / "annotations.json").is_file():
            return self.root
        raw = self.raw.ensure()
        if self.progress:
            print(f"{self.name}: refining {raw.name} with {self.refiner.path}", flush=True)
        try:
            refine_dataset(self.refiner, raw, self.root, batch_size=self.batch_size)
        except DataError:
            if not (self.root / "annotations.json").is_file():  # another process finished the same work first
                raise
        return self.root

    def load(self):
        samples = super().load()
        for s in samples:
            s.meta["kind"] = "refined"
        return samples

    def card(self) -> dict[str, Any]:
        card = super().card()
        card.update({"name": self.name, "source": f"{card['source']} refined by {self.refiner.path.name}",
                     "format": "COCO (scene engine, refined)", "kind": "refined", "refiner": self.refiner.info(),
                     "refiner_trained_on": self.refiner.trained_on})
        return card
