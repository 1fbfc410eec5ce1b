"""``python -m synthetic.refine train [key=value ...]`` | ``python -m synthetic.refine apply refiner=CKPT
input=DIR output=DIR`` (Hydra: ``conf/refine.yaml``, ``conf/refine_apply.yaml``)."""
import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.cli import guarded

CONF = str(Path(__file__).resolve().parents[2] / "conf")
CONFIGS = {"train": "refine", "apply": "refine_apply"}
USAGE = ("usage: python -m synthetic.refine train [key=value ...]\n"
         "       python -m synthetic.refine apply refiner=CKPT input=DATASET_DIR [output=DIR] [key=value ...]")


def _train(cfg: DictConfig) -> None:
    from synthetic.refine.run import train

    result = guarded(train, cfg, name="refine")
    print(f"refiner: {result['checkpoint']} (MLflow run {result['mlflow']['run_id']})")


def _apply(cfg: DictConfig) -> None:
    from synthetic.refine.run import apply

    result = guarded(apply, cfg, name="refine")
    print(json.dumps({k: result[k] for k in ("output", "images", "refiner", "geometry")}))


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in CONFIGS:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    action = sys.argv.pop(1)
    fn = _train if action == "train" else _apply
    hydra.main(version_base="1.3", config_path=CONF, config_name=CONFIGS[action])(fn)()


if __name__ == "__main__":
    main()
