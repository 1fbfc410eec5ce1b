"""Generated sources rendered on the fly inside dataloader workers, identical to the cached files."""
from __future__ import annotations

import numpy as np
import torch

from synthetic.sources import CameraHealthSource
from vision.data.classification import ClassificationDataModule


def _dm(tmp_path, on_the_fly, workers=0):
    src = CameraHealthSource(str(tmp_path / "cache"), num_per_class=10, seed=3, progress=False, on_the_fly=on_the_fly)
    return ClassificationDataModule({"camera_health": src}, preprocess={"size": [48, 64]}, batch_size=4,
                                    num_workers=workers, seed=3)


def test_on_the_fly_matches_cached_files(tmp_path):
    fly, cached = _dm(tmp_path, True), _dm(tmp_path, False)
    fly.setup()
    assert not (tmp_path / "cache").exists(), "on-the-fly mode wrote files"
    cached.setup()
    assert [s.key for s in fly.splits["test"]] == [s.key for s in cached.splits["test"]]
    a, b = fly.dataset("test"), cached.dataset("test")
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    assert fly.cards[0]["licence"] == "generated" and fly.summary()["kinds"] == {"camera_health": "synthetic"}


def test_rendering_happens_in_dataloader_workers(tmp_path):
    dm = _dm(tmp_path, True, workers=2)
    dm.setup()
    seen = 0
    for x, y, _ in dm.train_dataloader():
        assert x.shape[1:] == (3, 48, 64) and np.isfinite(x.numpy()).all()
        seen += len(y)
    assert seen == len(dm.splits["train"]) - len(dm.splits["train"]) % 4
