"""The Hydra Sweeper class; the work is in ``_impl`` (imported when a sweep starts, not at plugin discovery)."""

from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class VisionOptunaSweeper(Sweeper):
    """Optuna ask/tell behind Hydra's launcher, resumable, with MLflow parent/child runs."""

    def __init__(self, **kwargs: Any) -> None:
        from ._impl import SweeperImpl

        self.sweeper = SweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.sweeper.sweep(arguments)
