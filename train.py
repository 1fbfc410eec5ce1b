"""Train a recipe: ``python train.py experiment=<name> [key=value ...]`` (Hydra)."""
import hydra
from omegaconf import DictConfig

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.cli import guarded


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from vision.training import run

    return guarded(run, cfg, name="train")


if __name__ == "__main__":
    main()
