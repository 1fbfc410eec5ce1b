"""Export a checkpoint to an edge bundle: ``python export.py checkpoint=PATH [key=value ...]`` (Hydra)."""
import hydra
from omegaconf import DictConfig

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.cli import guarded


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> str:
    from vision.export.pipeline import run

    out = guarded(run, cfg, name="export")
    print(f"bundle: {out}")
    return str(out)


if __name__ == "__main__":
    main()
