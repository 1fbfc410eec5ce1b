"""Shared fixtures: tiny generated datasets, the real shared data (skipped when absent), and a
helper that runs the real entry points (train.py / export.py) in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VISION_DATA_ROOT", REPO.parent / "shared" / "data"))
PY = sys.executable

# Small and fast: every training in the suite uses these overrides on top of its own.
TINY = ["model.width_mult=0.25", "data.preprocess.size=[32,32]", "data.batch_size=8",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]


def shared(name: str) -> Path:
    p = SHARED / name
    if not p.is_dir():
        pytest.skip(f"real dataset {p} is absent (expected ../shared/data/{name} beside the repository)")
    return p


def make_tiny_folder(root: Path, per_class: int = 12, size: int = 40, seed: int = 0) -> Path:
    """Three visually distinct classes (stripes / blobs / flat), learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("stripes", "blobs", "flat")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
            if name == "stripes":
                img[:, ::4] = 220
            elif name == "blobs":
                y, x = rng.integers(8, size - 8, 2)
                img[y - 6:y + 6, x - 6:x + 6] = (200, 60, 60)
            else:
                img[:] = img // 4 + 100
            Image.fromarray(img).save(root / name / f"{name}_{i:03d}.png")
    return root


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_tiny_folder(tmp_path / "tiny")


def run_entry(script: str, cwd: Path, *overrides: str, timeout: int = 600, check: bool = True,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``train.py``/``export.py`` for real; on failure show its output."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run([PY, str(REPO / script), *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(overrides)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def run_runtime_without(argv: list[str], blocked=("torch",), timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m vision.runtime ARGV`` as on a device without the ``blocked`` packages: they are made
    unimportable, and the run fails if anything imported them anyway."""
    code = ("import sys\n"
            f"blocked = {tuple(blocked)!r}\n"
            "sys.modules.update({m: None for m in blocked})\n"
            f"from vision.runtime.__main__ import main\nrc = main({list(argv)!r})\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in blocked and sys.modules[m] is not None]\n"
            "sys.exit(rc)\n")
    return subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def tiny_train_args(folder: Path, *extra: str) -> list[str]:
    return ["data=image_folder", f"data.sources.images.root={folder}", *TINY, *extra]
