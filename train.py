"""Train a recipe: ``python train.py experiment=<name> [key=value ...]`` (Hydra)."""
import logging
import sys

import hydra
from omegaconf import DictConfig

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.errors import VisionError


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from vision.training import run

    try:
        return run(cfg)
    except VisionError as e:
        logging.getLogger("train").error("%s: %s", type(e).__name__, e)
        sys.exit(2)


if __name__ == "__main__":
    main()
