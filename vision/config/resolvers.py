"""OmegaConf resolvers the recipes use (``${vision.root:}``, ``${vision.cwd:}``, ...)."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]


def _output_dir(fallback: str) -> str:
    """Hydra's run/sweep output folder inside a Hydra app; ``fallback`` under the compose API."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 - no Hydra context
        pass
    return str(fallback)


def _precision_for(accelerator: str) -> str:
    """bf16 mixed precision on GPUs, full fp32 on CPUs."""
    return "bf16-mixed" if str(accelerator).lower() in ("gpu", "cuda") else "32-true"


def register_resolvers() -> None:
    for name, fn in {
        "vision.root": lambda: str(REPO_ROOT),
        "vision.cwd": lambda: os.getcwd(),
        "vision.output_dir": _output_dir,
        "vision.precision_for": _precision_for,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
