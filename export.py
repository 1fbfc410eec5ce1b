"""Export a checkpoint to an edge bundle: ``python export.py checkpoint=PATH [key=value ...]`` (Hydra)."""
import logging
import sys

import hydra
from omegaconf import DictConfig

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.errors import VisionError


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> str:
    from vision.export.pipeline import run

    try:
        out = run(cfg)
    except VisionError as e:
        logging.getLogger("export").error("%s: %s", type(e).__name__, e)
        sys.exit(2)
    print(f"bundle: {out}")
    return str(out)


if __name__ == "__main__":
    main()
