"""Dataset curation in FiftyOne (Hydra): ``python -m vision.curate action=ACTION dataset=NAME [key=value ...]``.

Actions: ``load`` (``source.path=...``), ``dedup``, ``predict`` (``predict.model=...``), ``views``, ``tags``,
``app`` (``app.port=5151``), ``export-snapshot`` (``snapshot.name=...``), ``summary``.
Prints the result as JSON on stdout; bad input ends with one ``error:`` line on stderr and exit code 2.
See ``conf/curate.yaml`` and :mod:`vision.curation`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.cli import guarded
from vision.errors import ConfigError, DataError

CONF = str(Path(__file__).resolve().parents[1] / "conf")
ACTIONS = ("load", "dedup", "predict", "views", "tags", "app", "export-snapshot", "summary")


def run(cfg: DictConfig) -> dict[str, Any]:
    from vision.curation import actions
    from vision.curation.db import import_fiftyone

    action = cfg.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"action={action!r} is not one of {', '.join(ACTIONS)}")
    if OmegaConf.is_missing(cfg, "dataset") or not cfg.dataset:
        raise ConfigError("dataset=NAME is required (the FiftyOne dataset to work on)")
    if action == "load" and cfg.source.path and not Path(str(cfg.source.path)).expanduser().exists():
        raise DataError(f"{cfg.source.path}: source path not found (source.path=...)")
    import_fiftyone(database_uri=cfg.database.uri, database_dir=cfg.database.dir)
    c = OmegaConf.to_container(cfg, resolve=True)
    if action == "load":
        return actions.load(c["dataset"], c["source"])
    if action == "dedup":
        return actions.dedup(c["dataset"], c["dedup"])
    if action == "predict":
        return actions.predict(c["dataset"], c["predict"])
    if action == "views":
        return actions.views(c["dataset"], c["views"])
    if action == "tags":
        return actions.tags(c["dataset"], c["tags"])
    if action == "app":
        return actions.app(c["dataset"], c["app"])
    if action == "export-snapshot":
        return actions.export(c["dataset"], c["snapshot"])
    return actions.summary(c["dataset"], c["snapshot"]["root"])


@hydra.main(version_base="1.3", config_path=CONF, config_name="curate")
def main(cfg: DictConfig) -> None:
    result = guarded(run, cfg, name="curate")
    print(json.dumps(result, indent=1, sort_keys=True, default=str), flush=True)


if __name__ == "__main__":
    main()
