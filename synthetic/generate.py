"""The generation job behind ``python -m synthetic``: validate the scene config, then write it."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vision.config import validate
from vision.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class GenerateSchema:
    synthetic: Any
    paths: Any
    output_dir: str
    formats: list = dataclasses.field(default_factory=lambda: ["coco", "mot", "reid"])
    progress: bool = True
    run_name: str = "generate"
    experiment_name: str = "synthetic"


def run(cfg: DictConfig) -> Path:
    from synthetic.scene import write_dataset

    validate(cfg, GenerateSchema)
    try:
        scene_cfg = instantiate(cfg.synthetic.scene, _convert_="all").validate()
    except ValueError as e:
        raise ConfigError(f"synthetic.scene: {e}") from e
    out = Path(cfg.output_dir)
    try:
        path = write_dataset(scene_cfg, out, list(cfg.formats), progress=bool(cfg.progress))
    except FileExistsError as e:
        raise DataError(f"{out}: already exists; generated datasets are never overwritten ({e})") from e
    except (PermissionError, NotADirectoryError) as e:
        raise DataError(f"{out}: cannot write the dataset here ({e})") from e
    except ValueError as e:
        raise ConfigError(str(e)) from e
    log.info("generated %s", path)
    return path
