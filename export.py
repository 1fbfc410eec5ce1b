"""Export a checkpoint to an edge bundle: ``python export.py checkpoint=PATH [key=value ...]`` (Hydra).

Registry actions (``vision/export/registry.py``):
``python export.py promote model_name=NAME version=N alias=production`` (or ``from_alias=candidate``) and
``python export.py register bundle=PATH`` (same as ``action=promote promote.model_name=...`` and
``action=register bundle=...``).
"""
import sys

import hydra
from omegaconf import DictConfig

import vision.config  # noqa: F401  (registers the config resolvers)
from vision.cli import guarded

# subcommand -> (action, short keys that belong to its config block)
SUBCOMMANDS = {
    "promote": {"model_name": "promote.model_name", "version": "promote.version", "alias": "promote.alias",
                "from_alias": "promote.from_alias", "tracking_uri": "register.tracking_uri"},
    "register": {"model_name": "register.model_name", "alias": "register.alias",
                 "tracking_uri": "register.tracking_uri"},
}


def _subcommand(argv: list[str]) -> list[str]:
    """``export.py promote k=v ...`` -> ``export.py action=promote promote.k=v ...`` (before Hydra parses)."""
    if len(argv) > 1 and argv[1] in SUBCOMMANDS:
        keys = SUBCOMMANDS[argv[1]]
        rest = [f"{keys[a.split('=', 1)[0]]}={a.split('=', 1)[1]}" if "=" in a and a.split("=", 1)[0] in keys else a
                for a in argv[2:]]
        return [argv[0], f"action={argv[1]}", *rest]
    return argv


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig):
    from vision.export.registry import run_action

    out = guarded(run_action, cfg, name="export")
    if cfg.get("action", "export") == "export":
        print(f"bundle: {out}")
        return str(out)
    return out


if __name__ == "__main__":
    sys.argv = _subcommand(sys.argv)
    main()
