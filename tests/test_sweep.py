"""Sweeps (hydra_plugins/vision_sweeper): real Hydra multiruns of train.py on a tiny image folder, a real
Optuna SQLite study, a real MLflow SQLite store. Parallel trials through the joblib launcher, a sweep killed
mid-trial and resumed, a grid with a failing point, and the hparams_search presets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import PY, REPO, make_tiny_folder, run_entry, tiny_train_args

import vision.config  # noqa: F401  (resolvers)
from hydra_plugins.vision_sweeper import _space
from hydra_plugins.vision_sweeper._impl import SweeperImpl, TrialExit, _Guarded

SPACE = ["model.width_mult=choice(0.25,0.5)", "task.optimizer.lr=tag(log,interval(1e-3,1e-2))"]


def _sweep_args(folder: Path, *extra: str) -> list[str]:
    return ["-m", *tiny_train_args(folder, "trainer.max_epochs=1", "log_checkpoint=false"), *extra]


def _study(work: Path) -> optuna.Study:
    storage = f"sqlite:///{work / 'multirun' / 'optuna.db'}"
    names = optuna.get_all_study_names(storage)
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage)


def _runs(work: Path, experiment: str = "classification") -> tuple[mlflow.MlflowClient, list, list]:
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _sweep_json(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / "multirun").glob("*/sweep.json"))]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.mark.slow
def test_parallel_optuna_sweep_nests_every_trial_under_one_parent(work, tmp_path):
    folder = make_tiny_folder(tmp_path / "tiny")
    run_entry("train.py", work, *_sweep_args(folder, "hydra/sweeper=vision_optuna", "hydra/launcher=joblib",
                                             "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                                             "hydra.sweeper.n_trials=4", "hydra.sweeper.seed=1", *SPACE))
    study = _study(work)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.trials) == 4 and len(complete) == 4

    client, parents, children = _runs(work)
    assert len(parents) == 1
    parent = parents[0]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert parent.info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    by_trial = {int(c.data.tags["sweep.trial"]): c for c in children}
    assert sorted(by_trial) == [0, 1, 2, 3]
    for t in complete:  # each child trained what its trial asked for, and reports its objective
        c = by_trial[t.number]
        assert float(c.data.params["model.width_mult"]) == t.params["model.width_mult"]
        assert float(c.data.params["task.optimizer.lr"]) == pytest.approx(t.params["task.optimizer.lr"])
        assert c.data.metrics["best/val/acc"] == pytest.approx(t.value)
        assert t.user_attrs["mlflow_run_id"] == c.info.run_id
    # the two trials of a batch really ran at the same time (joblib worker processes): each job's interval
    # goes from Hydra writing its .hydra/config.yaml to training writing its run.json
    spans = []
    for t in study.trials[:2]:
        out = Path(t.user_attrs["output_dir"])
        spans.append(((out / ".hydra" / "config.yaml").stat().st_mtime, (out / "run.json").stat().st_mtime))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans

    # the parent: search space, one value per trial, the best trial, the plot and the table
    assert parent.data.params["space.model.width_mult"] == "choice(0.25, 0.5)"
    assert parent.data.params["space.task.optimizer.lr"].startswith("log interval(")
    steps = {m.step: m.value for m in client.get_metric_history(parent.info.run_id, "trial_value")}
    assert steps == {t.number: pytest.approx(t.value) for t in complete}
    best = study.best_trial
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags["best.trial"] == str(best.number)
    assert parent.data.tags["best.model.width_mult"] == str(best.params["model.width_mult"])
    arts = {a.path: a for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert arts["sweep/comparison.png"].file_size > 5000
    for name in ("trials.csv", "trials.json", "best_trial.json", "search_space.json", "summary.json"):
        assert f"sweep/{name}" in arts
    table = Path(client.download_artifacts(parent.info.run_id, "sweep/trials.csv", str(tmp_path))).read_text()
    assert len(table.strip().splitlines()) == 1 + 4

    (summary,) = _sweep_json(work)
    assert summary["trials_complete"] == 4 and summary["trials_run_now"] == [0, 1, 2, 3]
    assert summary["mlflow_parent_run_id"] == parent.info.run_id


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(work, tmp_path):
    folder = make_tiny_folder(tmp_path / "tiny")
    args = _sweep_args(folder, "hydra/sweeper=vision_optuna", "hydra.sweeper.n_trials=4", "test_after_fit=false",
                       *SPACE)
    # 1) start the sweep and kill it (SIGKILL, no cleanup) while its third trial is training
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([PY, str(REPO / "train.py"), *args], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        deadline = time.time() + 300
        try:
            while not list((work / "multirun").glob("*/2/mlflow_run_id")):
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
                assert time.time() < deadline, "the third trial never started"
                time.sleep(0.2)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    study = _study(work)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    interrupted_params = study.trials[2].params
    parent_id = study.user_attrs["mlflow_parent_run_id"]

    # 2) the same command again: trial 2 is marked FAIL and its parameters run again, then one more trial
    run_entry("train.py", work, *args)
    study = _study(work)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                      TrialState.COMPLETE]
    assert study.trials[2].user_attrs["interrupted"] is True
    retry = study.trials[3]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == interrupted_params
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id  # the same parent run
    summaries = _sweep_json(work)
    assert len(summaries) == 1  # the killed invocation never got to write its summary
    assert summaries[0]["trials_run_now"] == [3, 4] and summaries[0]["interrupted_requeued"] == [2]
    # only two new trainings ran: 2 finished before the kill + 2 now (the killed one never finished)
    assert len(list((work / "multirun").glob("*/*/run.json"))) == 4

    _, parents, children = _runs(work)
    assert [p.info.run_id for p in parents] == [parent_id]
    assert parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent_id}
    status = {int(c.data.tags["sweep.trial"]): c.info.status for c in children}
    assert status == {0: "FINISHED", 1: "FINISHED", 2: "KILLED", 3: "FINISHED", 4: "FINISHED"}
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    steps = [m.step for m in client.get_metric_history(parent_id, "trial_value")]
    assert sorted(steps) == [0, 1, 3, 4]  # each trial's value logged once, across both invocations


@pytest.mark.slow
def test_grid_sweep_nests_runs_and_survives_a_failing_point(work, tmp_path):
    folder = make_tiny_folder(tmp_path / "tiny")
    # width -1 fails when the model is built, before training creates its MLflow run
    run_entry("train.py", work, *_sweep_args(folder, "hydra/sweeper=vision_grid", "hydra.sweeper.max_failures=1",
                                             "test_after_fit=false", "model.width_mult=0.25,-1"))
    study = _study(work)
    by_width = {t.params["model.width_mult"]: t for t in study.trials}
    assert sorted(by_width) == [-1, 0.25]
    assert by_width[0.25].state == TrialState.COMPLETE and by_width[-1].state == TrialState.FAIL
    assert "width_mult must be > 0" in by_width[-1].user_attrs["error"]

    _, parents, children = _runs(work)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["sweep.sampler"] == "grid"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    status = {c.data.tags["sweep.trial"]: c for c in children}
    ok, bad = status[str(by_width[0.25].number)], status[str(by_width[-1].number)]
    assert ok.info.status == "FINISHED" and bad.info.status == "FAILED"
    assert "width_mult must be > 0" in bad.data.tags["sweep.error"]
    assert bad.data.params["model.width_mult"] == "-1"

    # the grid is done: the same command runs nothing
    run_entry("train.py", work, *_sweep_args(folder, "hydra/sweeper=vision_grid", "hydra.sweeper.max_failures=1",
                                             "test_after_fit=false", "model.width_mult=0.25,-1"))
    assert len(_study(work).trials) == 2
    assert [s["trials_run_now"] for s in _sweep_json(work)][-1] == []


# -- presets and the search-space syntax (no training) -------------------------------------------------------
PRESETS = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))
EXPERIMENT = {"camera_health": "camera_health", "detection": "detection", "reid": "reid"}


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose_and_every_key_exists(preset):
    from vision.config import validate
    from vision.config.schema import TrainSchema

    experiment = next(e for p, e in EXPERIMENT.items() if preset.startswith(p))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"hparams_search={preset}"],
                      return_hydra_config=True)
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_ == "hydra_plugins.vision_sweeper.vision_sweeper.VisionOptunaSweeper"
        assert cfg.hydra.launcher.n_jobs == sweeper.n_jobs
        space, fixed = _space.parse(_space.params_entries(sweeper.params))
        assert space and not fixed
        missing = object()
        for key in space:
            assert OmegaConf.select(cfg, key, default=missing) is not missing, f"{preset}: {key} is not in the config"
        if sweeper.sampler == "grid":
            _space.grid_choices(space)
        # a trial at the low end of every range composes and passes the recipe's validation
        trial = {k: (d.choices[0] if hasattr(d, "choices") else d.low) for k, d in space.items()}
        tcfg = compose("train", overrides=[f"experiment={experiment}", *_space.trial_overrides(trial, [])])
        validate(tcfg, TrainSchema)
        for k, v in trial.items():
            got = OmegaConf.select(tcfg, k)
            assert (OmegaConf.to_container(got) if OmegaConf.is_config(got) else got) == \
                (json.loads(v) if isinstance(v, str) else v)


def test_search_space_syntax():
    space, fixed = _space.parse(["a=choice(1,2.5,x,[3,4])", "b=tag(log,interval(1e-4,1e-1))",
                                 "c=tag(int,interval(1,8))", "d=range(2,10,2)", "e=1,2", "f=7", "+g=true"])
    assert fixed == ["f=7", "+g=true"]
    assert space["a"].choices == (1, 2.5, "x", "[3,4]")
    assert space["b"].log and space["b"].low == pytest.approx(1e-4)
    assert isinstance(space["c"], optuna.distributions.IntDistribution) and (space["c"].low, space["c"].high) == (1, 8)
    assert (space["d"].low, space["d"].high, space["d"].step) == (2, 8, 2)
    assert space["e"].choices == (1, 2)
    assert _space.trial_overrides({"a": "[3,4]", "b": 0.001, "e": 2}, fixed) == ["f=7", "+g=true", "a=[3,4]",
                                                                                 "b=0.001", "e=2"]
    assert _space.grid_choices({"d": space["d"], "e": space["e"]}) == {"d": [2, 4, 6, 8], "e": [1, 2]}
    with pytest.raises(_space.SearchSpaceError, match="discrete"):
        _space.grid_choices({"b": space["b"]})
    with pytest.raises(_space.SearchSpaceError, match="start > 0"):
        _space.parse(["b=tag(log,interval(0,1))"])
    # the same search (in any order) names the same study; another search another one
    fp = _space.fingerprint(space, fixed, "maximize")
    assert fp == _space.fingerprint(dict(reversed(list(space.items()))), list(reversed(fixed)), "maximize")
    assert fp != _space.fingerprint(space, fixed, "minimize")
    with pytest.raises(ValueError, match="sampler"):
        SweeperImpl(sampler="cmaes")
    with pytest.raises(TrialExit, match="code 2"):
        _Guarded(lambda cfg: sys.exit(2))(None)


def test_journal_file_storage_keeps_a_study(tmp_path):
    from hydra_plugins.vision_sweeper._impl import make_storage

    url = f"journal://{tmp_path / 'sweeps' / 'study.log'}"
    study = optuna.create_study(study_name="s", storage=make_storage(url), direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    study.tell(trial, 0.5)
    again = optuna.load_study(study_name="s", storage=make_storage(url))
    assert [(t.state, t.value) for t in again.trials] == [(TrialState.COMPLETE, 0.5)]
