"""The sweep: Optuna ask/tell in batches of ``n_jobs`` trials, each batch run by Hydra's launcher.

Resumable: the study lives in a persistent storage (SQLite by default) under a name derived from what it
searches, so running the same command again continues it: COMPLETE trials count and are not re-run,
trials an interrupted sweep left RUNNING are marked FAIL (``interrupted``) and their parameters queued
again, and the MLflow parent run (its id is a user attribute of the study) is reused.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from . import _space

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"  # vision.training writes the run's MLflow id there, in the run's output folder
ATTR_PARENT = "mlflow_parent_run_id"
ATTR_TRACKING_URI = "mlflow_tracking_uri"
SAMPLERS = ("tpe", "random", "grid")


class TrialExit(RuntimeError):
    """A trial's task function called ``sys.exit`` (the entry points do so on bad input)."""


class _Guarded:
    """The task function with ``sys.exit`` turned into an exception, so that a failing trial fails alone
    (Hydra's launchers record exceptions in the job's return; a SystemExit would end the whole sweep)."""

    def __init__(self, fn: TaskFunction) -> None:
        self.fn = fn

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            return self.fn(cfg)
        except SystemExit as e:
            raise TrialExit(f"the trial exited with code {e.code} (its error is the last line of its stderr/log)") \
                from None


def make_storage(url: str | None) -> Any:
    """An Optuna storage from a URL: sqlite:///..., any SQLAlchemy URL, journal:///path (a journal file),
    or None (in memory)."""
    if not url:
        return None
    if url.startswith("journal://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal://"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def _tell(study: optuna.Study, trial: Any, state: TrialState, value: float | None = None) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:  # the grid sampler calls study.stop() once the grid is done (meant for optimize())
        if "Study.stop" not in str(e):
            raise


def _output_dir(ret: JobReturn | None) -> str | None:
    if ret is None or ret.hydra_cfg is None:
        return None
    h = ret.hydra_cfg.hydra if "hydra" in ret.hydra_cfg else ret.hydra_cfg
    try:
        return str(h.runtime.output_dir)
    except Exception:  # noqa: BLE001 - a job that failed before Hydra set it up
        return None


def _child_run_id(out_dir: str | None) -> str | None:
    if not out_dir:
        return None
    f = Path(out_dir) / RUN_ID_FILE
    return (f.read_text().strip() or None) if f.is_file() else None


def _error_text(exc: Any) -> str:
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)


class SweeperImpl(Sweeper):
    def __init__(self, direction: str | None = None, n_trials: int | None = 10, n_jobs: int = 1,
                 sampler: str = "tpe", seed: int | None = 0, n_startup_trials: int = 5,
                 study_name: str | None = None, storage: str | None = None, max_failures: int = 3,
                 params: Mapping[str, Any] | None = None, mlflow_parent: bool = True) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"hydra.sweeper.sampler={sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if direction not in (None, "maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: expected maximize, minimize or null")
        if n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_jobs={n_jobs}: expected >= 1")
        if n_trials is None and sampler != "grid":
            raise ValueError("hydra.sweeper.n_trials is required (null means the whole grid, with sampler=grid)")
        self.direction, self.n_trials, self.n_jobs, self.sampler_name = direction, n_trials, int(n_jobs), sampler
        self.seed, self.n_startup_trials, self.study_name = seed, int(n_startup_trials), study_name
        self.storage_url, self.max_failures, self.mlflow_parent = storage, int(max_failures), bool(mlflow_parent)
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=_Guarded(task_function), config=config)

    # -- settings from the recipe --------------------------------------------------------------------------
    def _direction(self, cfg: DictConfig) -> str:
        if self.direction:
            return self.direction
        mode = OmegaConf.select(cfg, "task.monitor_mode", default="max")
        return "minimize" if str(mode).lower() == "min" else "maximize"

    def _default_storage(self, cfg: DictConfig) -> str | None:
        url = self.storage_url
        if url is None:
            work = OmegaConf.select(cfg, "paths.work_dir", default=None) or os.getcwd()
            return f"sqlite:///{Path(work).resolve() / 'multirun' / 'optuna.db'}"
        return None if str(url).lower() in ("memory", "none", "") else str(url)

    def _sampler(self, grid: dict[str, list[Any]] | None, offset: int) -> optuna.samplers.BaseSampler:
        # A resumed study gets a seed shifted by its trial count: the same seed would replay the first draws.
        seed = None if self.seed is None else int(self.seed) + offset
        if grid is not None:
            return optuna.samplers.GridSampler(grid, seed=seed)
        if self.sampler_name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials, constant_liar=True)

    # -- resume -------------------------------------------------------------------------------------------
    @staticmethod
    def _recover(study: optuna.Study, storage: Any) -> list[int]:
        """Trials left RUNNING by an interrupted sweep: FAIL (user attr ``interrupted``), their params queued."""
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or storage is None:
            return []
        study_id = storage.get_study_id_from_name(study.study_name)
        for t in running:
            tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(tid, "interrupted", True)
            _tell(study, t.number, TrialState.FAIL)
            if t.params:
                keep = {k: v for k, v in t.system_attrs.items() if k in ("grid_id", "search_space")}
                study.add_trial(optuna.trial.create_trial(
                    state=TrialState.WAITING, params=t.params, distributions=t.distributions,
                    user_attrs={"retry_of": t.number}, system_attrs=keep))
        log.info("resume: %d interrupted trial(s) (%s) marked FAIL and queued again", len(running),
                 ", ".join(str(t.number) for t in running))
        return [t.number for t in running]

    def _remaining(self, study: optuna.Study, grid: dict[str, list[Any]] | None) -> int:
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        remaining = (self.n_trials - complete) if self.n_trials is not None else math.inf
        if grid is not None:
            size = math.prod(len(v) for v in grid.values())
            same = dict(sorted(grid.items()))
            done = {t.system_attrs["grid_id"] for t in trials
                    if t.state.is_finished() and not t.user_attrs.get("interrupted") and "grid_id" in t.system_attrs
                    and t.system_attrs.get("search_space") == same}
            remaining = min(remaining, size - len(done))
        return int(max(0, remaining))

    # -- the sweep ----------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        cfg = self.config
        space, fixed = _space.parse(_space.params_entries(self.params) + list(arguments),
                                    self.hydra_context.config_loader)
        if not space:
            raise ValueError("the sweep has no search space: set hydra.sweeper.params (or an hparams_search preset) "
                             "or give overrides such as key=choice(a,b), key=interval(0,1), key=a,b")
        direction = self._direction(cfg)
        grid = _space.grid_choices(space) if self.sampler_name == "grid" else None
        study_name = self.study_name or (f"{OmegaConf.select(cfg, 'experiment_name', default='sweep')}-"
                                         f"{_space.fingerprint(space, fixed, direction)}")
        storage_url = self._default_storage(cfg)
        storage = make_storage(storage_url)
        study = optuna.create_study(study_name=study_name, storage=storage, direction=direction,
                                    load_if_exists=True, sampler=optuna.samplers.RandomSampler())
        if study.direction.name.lower() != direction:
            raise ValueError(f"study {study_name!r} in {storage_url} was created to {study.direction.name.lower()}, "
                             f"not {direction}: choose another hydra.sweeper.study_name")
        previous = len(study.trials)
        study.sampler = self._sampler(grid, previous)
        interrupted = self._recover(study, storage)
        objective = str(OmegaConf.select(cfg, "task.monitor", default="objective"))
        log.info("study %s (%s, %s, %s): %d trial(s) stored, %d complete; storage %s", study_name, self.sampler_name,
                 direction, objective, previous, self._count(study, TrialState.COMPLETE), storage_url or "in memory")

        parent = self._open_parent(cfg, study, study_name, storage_url, space, fixed, direction, objective)
        if parent is not None:
            killed = parent.kill_orphans()
            if killed:
                log.info("resume: %d child run(s) of the interrupted sweep marked KILLED", killed)

        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")

        failures: list[tuple[int, str]] = []
        ran: list[int] = []
        status = "FAILED"
        try:
            while len(failures) <= self.max_failures:
                n = min(self.n_jobs, self._remaining(study, grid))
                if n <= 0:
                    break
                trials = [study.ask(space) for _ in range(n)]
                ran += [t.number for t in trials]
                self._run_batch(study, trials, space, fixed, parent, study_name, failures)
                if parent is not None:
                    parent.log_progress(*self._progress(study), direction, objective, space)
            status = "FINISHED" if len(failures) <= self.max_failures else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            summary = self._summary(study, study_name, storage_url, direction, objective, parent, ran, failures,
                                    interrupted)
            (sweep_dir / "sweep.json").write_text(json.dumps(summary, indent=1, default=str))
            if parent is not None:
                try:
                    parent.log_progress(*self._progress(study), direction, objective, space)
                    parent.client.log_dict(parent.run_id, summary, "sweep/summary.json")
                finally:
                    parent.finish(status)
        best = summary.get("best") or {}
        log.info("sweep %s: %d complete, %d failed now; best %s = %s (trial %s)", study_name,
                 summary["trials_complete"], len(failures), objective, best.get("value"), best.get("number"))
        if len(failures) > self.max_failures:
            first = failures[0]
            raise RuntimeError(f"{len(failures)} trials failed (hydra.sweeper.max_failures={self.max_failures}); "
                               f"trial {first[0]}: {first[1][:500]}")
        return summary

    @staticmethod
    def _count(study: optuna.Study, state: TrialState) -> int:
        return len(study.get_trials(deepcopy=False, states=(state,)))

    def _run_batch(self, study: optuna.Study, trials: Sequence[optuna.Trial], space: Mapping[str, Any],
                   fixed: Sequence[str], parent: Any, study_name: str, failures: list[tuple[int, str]]) -> None:
        run_name = _space.to_override_value(study_name)
        jobs = []
        for t in trials:
            params = {k: t.params[k] for k in space}
            overrides = _space.trial_overrides(params, fixed)
            if parent is not None:
                overrides += [f"++logger.parent_run_id={parent.run_id}", f"++logger.sweep_trial={t.number}",
                              f"++logger.run_name={run_name}-trial{t.number}"]
            try:  # compose each trial before launching it: one that does not compose fails alone
                self.validate_batch_is_legal([overrides])
            except Exception as e:  # noqa: BLE001
                self._fail(study, t, params, parent, study_name, f"config: {_error_text(e)}", None, failures)
                continue
            jobs.append((t, params, overrides))
        if not jobs:
            return
        log.info("launching trial(s) %s", ", ".join(str(t.number) for t, _, _ in jobs))
        try:
            returns: Sequence[JobReturn | None] = self.launcher.launch([o for _, _, o in jobs],
                                                                       initial_job_idx=jobs[0][0].number)
        except Exception as e:  # noqa: BLE001 - e.g. a crashed worker process: the batch failed
            returns = [None] * len(jobs)
            err = f"launcher: {_error_text(e)}"
        else:
            err = ""
        for (t, params, _), ret in zip(jobs, returns):
            out_dir = _output_dir(ret)
            run_id = _child_run_id(out_dir)
            if out_dir:
                t.set_user_attr("output_dir", out_dir)
            if ret is None:
                self._fail(study, t, params, parent, study_name, err, run_id, failures)
                continue
            if ret.status != JobStatus.COMPLETED:
                self._fail(study, t, params, parent, study_name, _error_text(ret._return_value), run_id, failures)
                continue
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                self._fail(study, t, params, parent, study_name,
                           f"the objective is {ret.return_value!r}, not a finite number", run_id, failures)
                continue
            if run_id is None and parent is not None:
                run_id = parent.child_of(t.number)
            if run_id:
                t.set_user_attr("mlflow_run_id", run_id)
            _tell(study, t, TrialState.COMPLETE, value)

    def _fail(self, study: optuna.Study, trial: optuna.Trial, params: Mapping[str, Any], parent: Any,
              study_name: str, error: str, run_id: str | None, failures: list[tuple[int, str]]) -> None:
        log.warning("trial %d failed: %s", trial.number, error[:2000])
        trial.set_user_attr("error", error[:2000])
        if parent is not None:
            try:
                run_id = parent.mark_failed(trial.number, run_id, params, error, f"{study_name}-trial{trial.number}")
            except Exception as e:  # noqa: BLE001 - tracking trouble must not hide the trial's own failure
                log.warning("could not record the failed trial %d in MLflow: %s", trial.number, e)
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        _tell(study, trial, TrialState.FAIL)
        failures.append((trial.number, error))

    # -- MLflow parent and reports ---------------------------------------------------------------------------
    def _open_parent(self, cfg: DictConfig, study: optuna.Study, study_name: str, storage_url: str | None,
                     space: Mapping[str, Any], fixed: Sequence[str], direction: str, objective: str) -> Any:
        logger = cfg.get("logger")
        if not self.mlflow_parent or not logger or not str(logger.get("_target_", "")).endswith("mlflow_logger"):
            return None
        from ._tracking import ParentRun

        logger_cfg = OmegaConf.to_container(logger, resolve=True)
        same_store = study.user_attrs.get(ATTR_TRACKING_URI) == logger_cfg.get("tracking_uri")
        tags = {"sweep.role": "parent", "sweep.study_name": study_name, "sweep.storage": storage_url or "memory",
                "sweep.sampler": self.sampler_name, "sweep.direction": direction, "sweep.objective": objective,
                "sweep.n_trials": self.n_trials, "sweep.n_jobs": self.n_jobs,
                "mlflow.note.content": f"Sweep {study_name}: {self.sampler_name} search of {', '.join(space)} "
                                       f"({direction} {objective}); every trial is a child run."}
        parent = ParentRun.open(logger_cfg, study.user_attrs.get(ATTR_PARENT) if same_store else None,
                                f"sweep-{study_name}", tags)
        study.set_user_attr(ATTR_PARENT, parent.run_id)
        study.set_user_attr(ATTR_TRACKING_URI, logger_cfg.get("tracking_uri"))
        if not parent.resumed:
            parent.log_search_space(space, {"study_name": study_name, "sampler": self.sampler_name,
                                            "seed": self.seed, "direction": direction, "objective": objective,
                                            "fixed_overrides": " ".join(fixed)})
        log.info("MLflow parent run %s (%s)", parent.run_id, "resumed" if parent.resumed else "new")
        return parent

    @staticmethod
    def _rows(study: optuna.Study) -> list[dict[str, Any]]:
        rows = []
        for t in study.get_trials(deepcopy=False):
            rows.append({"number": t.number, "state": t.state.name,
                         "value": t.value if t.state == TrialState.COMPLETE else None,
                         "params": dict(t.params),
                         "duration_s": t.duration.total_seconds() if t.duration else None,
                         "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                         "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                         "output_dir": t.user_attrs.get("output_dir"),
                         "retry_of": t.user_attrs.get("retry_of"),
                         "interrupted": bool(t.user_attrs.get("interrupted", False)),
                         "error": t.user_attrs.get("error")})
        return rows

    def _progress(self, study: optuna.Study) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        rows = self._rows(study)
        done = [r for r in rows if r["state"] == "COMPLETE"]
        if not done:
            return rows, None
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best_value = pick(r["value"] for r in done)
        best = next(r for r in done if r["value"] == best_value)  # the first trial that reached it
        return rows, best

    def _summary(self, study: optuna.Study, study_name: str, storage_url: str | None, direction: str,
                 objective: str, parent: Any, ran: list[int], failures: list[tuple[int, str]],
                 interrupted: list[int]) -> dict[str, Any]:
        rows, best = self._progress(study)
        return {"study_name": study_name, "storage": storage_url, "direction": direction, "objective": objective,
                "sampler": self.sampler_name, "mlflow_parent_run_id": parent.run_id if parent else None,
                "trials_complete": sum(r["state"] == "COMPLETE" for r in rows),
                "trials_failed": sum(r["state"] == "FAIL" and not r["interrupted"] for r in rows),
                "trials_run_now": ran, "failed_now": [n for n, _ in failures], "interrupted_requeued": interrupted,
                "best": best}
