"""The sweeper's config, registered as ``hydra/sweeper=vision_optuna`` and ``hydra/sweeper=vision_grid``."""
# (no "from __future__ import annotations": Hydra runs this module before it is in sys.modules, and dataclasses
# then cannot resolve string annotations)

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class VisionOptunaSweeperConf:
    _target_: str = "hydra_plugins.vision_sweeper.vision_sweeper.VisionOptunaSweeper"
    # maximize | minimize; null: from task.monitor_mode (max -> maximize)
    direction: Optional[str] = None
    # COMPLETE trials the study should hold (failed trials do not count); with the grid sampler null means
    # the whole grid. Running the same sweep again continues the study up to this number.
    n_trials: Optional[int] = 10
    # trials asked per batch and run at once by the launcher (hydra/launcher=joblib runs them in processes)
    n_jobs: int = 1
    sampler: str = "tpe"  # tpe | random | grid
    seed: Optional[int] = 0
    n_startup_trials: int = 5  # TPE: random trials before the model kicks in
    # null: <experiment_name>-<hash of the search space, the fixed overrides and the direction>, so the same
    # command finds its study again
    study_name: Optional[str] = None
    # an Optuna storage URL (sqlite:///..., postgresql://...), journal:///path/to/file.log (a journal file),
    # memory (in-memory: nothing to resume), or null: sqlite:///<paths.work_dir>/multirun/optuna.db
    storage: Optional[str] = None
    # the sweep stops (and exits with an error) once more trials than this failed in one invocation
    max_failures: int = 3
    # search space, hydra-optuna-sweeper syntax: key: choice(a,b) | range(1,5) | interval(0,1) |
    # tag(log, interval(1e-4,1e-1)) | tag(int, interval(1,8)); a plain value is a fixed override
    params: Dict[str, Any] = field(default_factory=dict)
    # one MLflow parent run per sweep, the trials nested under it (needs an MLflow cfg.logger)
    mlflow_parent: bool = True


@dataclass
class VisionGridSweeperConf(VisionOptunaSweeperConf):
    sampler: str = "grid"
    n_trials: Optional[int] = None


ConfigStore.instance().store(group="hydra/sweeper", name="vision_optuna", node=VisionOptunaSweeperConf,
                             provider="vision_sweeper")
ConfigStore.instance().store(group="hydra/sweeper", name="vision_grid", node=VisionGridSweeperConf,
                             provider="vision_sweeper")
