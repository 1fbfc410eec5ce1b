"""Albumentations pipelines from config, applied with a per-sample seed (reproducible on resume)."""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import numpy as np


def build(transforms: Sequence[Any] | None) -> A.Compose | None:
    """``transforms`` are already-instantiated albumentations transforms (Hydra ``_target_`` entries)."""
    if not transforms:
        return None
    for t in transforms:
        if not isinstance(t, A.BasicTransform | A.BaseCompose):
            raise TypeError(f"data.augment entries must be albumentations transforms, got {type(t).__name__}")
    return A.Compose(list(transforms), seed=0)


def apply(pipeline: A.Compose | None, image: np.ndarray, seed: int | None) -> np.ndarray:
    if pipeline is None or seed is None:
        return image
    pipeline.set_random_seed(seed)
    return pipeline(image=image)["image"]
