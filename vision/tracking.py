"""MLflow tracking: the logger, and what every run records (config, code, packages, data, results)."""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from vision.config.resolvers import REPO_ROOT

if TYPE_CHECKING:  # Lightning is imported where a logger is made (the sweeper's parent run does without it)
    from pytorch_lightning.loggers import MLFlowLogger

log = logging.getLogger(__name__)

PACKAGES = ("vision-toolkit", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "albumentations",
            "hydra-core", "omegaconf", "mlflow", "onnx", "onnxruntime", "numpy", "pillow", "fiftyone")


PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under its parent
TRIAL_TAG = "sweep.trial"


def resolve_store(tracking_uri: str | None, artifact_location: str | None) -> tuple[str | None, str | None]:
    """The tracking URI and artifact location as MLflow wants them (folders made, local paths as URIs)."""
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    remote = bool(tracking_uri) and tracking_uri.split("://", 1)[0] in ("http", "https", "databricks")
    if remote and artifact_location and "://" not in artifact_location:
        artifact_location = None  # a server stores (proxies) artifacts itself; a local folder is ours only
    if artifact_location and "://" not in artifact_location:
        Path(artifact_location).mkdir(parents=True, exist_ok=True)
        artifact_location = Path(artifact_location).resolve().as_uri()
    return tracking_uri, artifact_location


def mlflow_logger(experiment_name: str = "default", tracking_uri: str | None = None,
                  artifact_location: str | None = None, run_name: str | None = None,
                  tags: dict[str, str] | None = None, run_id: str | None = None,
                  parent_run_id: str | None = None, sweep_trial: int | None = None) -> Any:
    """An MLflow logger (Lightning's ``MLFlowLogger``); ``tracking_uri`` is a SQLite file (default), a folder,
    or an ``http://`` server.

    ``artifact_location`` (a local folder) applies to local stores; with a server the server's own
    artifact store is used, so artifacts travel through it. ``parent_run_id`` nests the run under a
    parent (a sweep's run; the sweeper passes it with ``sweep_trial``, the Optuna trial number).
    """
    from pytorch_lightning.loggers import MLFlowLogger

    tracking_uri, artifact_location = resolve_store(tracking_uri, artifact_location)
    tags = dict(tags or {})
    if parent_run_id:
        tags[PARENT_RUN_TAG] = str(parent_run_id)
    if sweep_trial is not None:
        tags[TRIAL_TAG] = str(sweep_trial)
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                        tags=tags or None, artifact_location=artifact_location, run_id=run_id)


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD") or "unknown"
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": commit, "dirty": str(dirty).lower()}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and any(isinstance(v, dict) for v in d):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = d
    return out


class RunRecorder:
    """Writes one run's context and results to MLflow (and nothing when tracking is off)."""

    def __init__(self, logger: MLFlowLogger | None) -> None:
        self.logger = logger

    @property
    def run_id(self) -> str | None:
        return self.logger.run_id if self.logger else None

    @property
    def client(self):
        return self.logger.experiment if self.logger else None

    def log_context(self, cfg: DictConfig, data_cards: list[dict[str, Any]], data_summary: dict[str, Any],
                    files: dict[str, Path], resumed: bool, task: str | None = None,
                    tags: dict[str, str] | None = None) -> None:
        """Params (once), git/task/data tags (``task`` defaults to the task class name; ``tags`` adds or
        replaces tags), the resolved config, package versions, the data summary and cards, and ``files``."""
        if not self.logger:
            return
        client, rid = self.client, self.run_id
        container = OmegaConf.to_container(cfg, resolve=True)
        if not resumed:  # MLflow params are immutable: log them once, at the start
            params = {k: str(v)[:6000] for k, v in _flatten(container).items() if not k.startswith("resume")}
            self.logger.log_hyperparams(params)
        git = git_state()
        tags = {"git.commit": git["commit"], "git.dirty": git["dirty"],
                "task": task or str(cfg.task._target_).rsplit(".", 1)[-1],
                "data.sources": ",".join(c["name"] for c in data_cards),
                "data.licences": "; ".join(f"{c['name']}: {c.get('licence')}" for c in data_cards), **(tags or {})}
        snaps = [c for c in data_cards if c.get("snapshot_id")]
        if snaps:  # curated snapshots (vision.data.snapshot): their names and immutable ids
            tags["data.snapshot"] = ",".join(str(c.get("snapshot") or c["name"]) for c in snaps)
            tags["data.snapshot_id"] = ",".join(str(c["snapshot_id"]) for c in snaps)
        if resumed:
            tags["resumed"] = "true"
        for k, v in tags.items():
            client.set_tag(rid, k, v)
        client.log_text(rid, OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
        client.log_dict(rid, package_versions(), "environment/packages.json")
        client.log_dict(rid, data_summary, "data/summary.json")
        for card in data_cards:
            clean = {k: v for k, v in card.items() if not k.startswith("_")}
            client.log_dict(rid, clean, f"data/cards/{card['name']}.yaml")
        for sub, path in files.items():
            if Path(path).is_file():
                client.log_artifact(rid, str(path), sub)

    def log_results(self, report: dict[str, Any] | None, best_checkpoint: str | None, labels: list[str],
                    log_checkpoint: bool = True) -> None:
        if not self.logger:
            return
        from vision.metrics import classification as cm_mod

        client, rid = self.client, self.run_id
        with tempfile.TemporaryDirectory() as tmp:
            if report is not None:
                client.log_dict(rid, report, "eval/test_report.json")
                import numpy as np

                if "confusion_matrix" in report:
                    p = cm_mod.plot_confusion_matrix(np.asarray(report["confusion_matrix"]), labels,
                                                     os.path.join(tmp, "confusion_matrix.png"), "test confusion matrix")
                    client.log_artifact(rid, p, "plots")
                for path in (report.get("artifacts") or {}).values():  # task plots: PR curves, error galleries
                    if Path(path).is_file():
                        client.log_artifact(rid, str(path), "plots")
            history = {}
            for key in client.get_run(rid).data.metrics:
                if key.endswith("_epoch") or key in ("val/acc", "val/loss", "val/macro_f1", "val/ap50", "val/ap",
                                                     "val/rank1", "val/rank5", "val/map", "val/minp"):
                    history[key] = [(m.step, m.value) for m in client.get_metric_history(rid, key)]
            if history:
                p = cm_mod.plot_curves(_by_epoch(client, rid, history), os.path.join(tmp, "curves.png"))
                client.log_artifact(rid, p, "plots")
        if log_checkpoint and best_checkpoint and Path(best_checkpoint).is_file():
            client.log_artifact(rid, best_checkpoint, "checkpoints")


def _by_epoch(client, rid: str, history: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    """Map metric steps to epochs through the 'epoch' metric Lightning logs alongside."""
    epochs = {m.step: int(m.value) for m in client.get_metric_history(rid, "epoch")}
    out = {}
    for k, pts in history.items():
        out[k.replace("_epoch", "")] = sorted((epochs.get(s, s), v) for s, v in pts)
    return out


def prepare_store(tracking_uri: str | None, experiment_name: str | None = None,
                  artifact_location: str | None = None) -> None:
    """Create (and migrate) a local SQLite store and the experiment under a file lock.

    Several processes opening a fresh ``mlruns.db`` at once (parallel sweep trials, cluster jobs)
    would otherwise race in MLflow's schema migration or in creating the same experiment; the first
    one builds them while the others wait, then all of them find them ready.
    """
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return
    import fcntl

    from mlflow.tracking import MlflowClient

    tracking_uri, artifact_location = resolve_store(tracking_uri, artifact_location)
    db = Path(tracking_uri[len("sqlite:///"):])
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri)
            if experiment_name and client.get_experiment_by_name(experiment_name) is None:
                client.create_experiment(experiment_name, artifact_location=artifact_location)
            else:
                client.search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
