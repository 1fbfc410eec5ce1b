"""Generate a synthetic dataset (Hydra): ``python -m synthetic [synthetic=street] [key=value ...]``."""
from pathlib import Path

import hydra
from omegaconf import DictConfig

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.cli import guarded

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF, config_name="generate")
def main(cfg: DictConfig) -> str:
    from synthetic.generate import run

    out = guarded(run, cfg, name="synthetic")
    print(f"dataset: {out}")
    return str(out)


if __name__ == "__main__":
    main()
