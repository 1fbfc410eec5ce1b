"""Edge bundles in the MLflow Model Registry: registration after the parity gate, and moving aliases.

``export.py`` (``action=export``, the default) registers every bundle that passed its parity gate, once it is
written and verified: the bundle folder (ONNX files, ``bundle.json``, ``MODEL_CARD.md``, ``parity_report.json``,
``calibration.json``) is logged under ``bundle/`` of an *export run* nested in the training run (same experiment,
``mlflow.parentRunId``), and a new version of the registered model is created from it, tagged with the bundle's
integrity hash (``bundle.integrity``, what the runtime checks when it loads ``models:/NAME@ALIAS``), the task,
the dataset snapshot id and the training run; then the alias (``candidate`` by default) moves to it.

``python export.py promote model_name=NAME version=N alias=production`` (or ``from_alias=candidate``) moves an
alias; ``python export.py register bundle=PATH`` registers a bundle already on disk.

A failed registration leaves nothing half done: the version, a registered model created for it and the export run
are removed again, and the error says so (the verified bundle folder stays on disk).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from vision.errors import ConfigError, VisionError
from vision.runtime.bundle import BUNDLE_FILE, BundleError, load_bundle
from vision.runtime.registry import INTEGRITY_TAG

log = logging.getLogger(__name__)
TASK_TAG = "task"
PRIMARY_METRIC = {"classification": "top1", "detection": "ap50", "reid": "rank1"}


class RegistryError(VisionError):
    """Registering a bundle or moving an alias failed (nothing was left half done)."""


def _mlflow():
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as e:  # pragma: no cover - mlflow is a dependency of the toolkit
        raise RegistryError(f"the MLflow registry needs the mlflow package ({e})") from e
    return MlflowClient, MlflowException


def _error_code(e: Exception) -> str:
    return str(getattr(e, "error_code", ""))


def _is_remote(uri: str) -> bool:
    return uri.split("://", 1)[0] in ("http", "https", "databricks")


def _client(uri: str):
    client_cls, _ = _mlflow()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return client_cls(uri, registry_uri=uri)


def default_model_name(doc: Mapping[str, Any]) -> str:
    """``<training experiment>-<task>`` (just the experiment when it already names the task)."""
    task = str(doc["task"])
    exp = str((doc.get("provenance") or {}).get("experiment_name") or "").strip()
    name = exp if exp and task in exp else f"{exp}-{task}" if exp else task
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or task


def _flat_metrics(doc: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for metric, per_model in (doc.get("metrics") or {}).items():
        if isinstance(per_model, Mapping):
            for model, v in per_model.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{metric}/{model}"] = float(v)
    return out


def _experiment_id(client, name: str, artifact_location: str | None, uri: str) -> str:
    _, mlflow_exc = _mlflow()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    loc = None
    if artifact_location and not _is_remote(uri):
        loc = artifact_location if "://" in artifact_location else Path(artifact_location).resolve().as_uri()
        if "://" not in artifact_location:
            Path(artifact_location).mkdir(parents=True, exist_ok=True)
    try:
        return client.create_experiment(name, artifact_location=loc)
    except mlflow_exc:  # created by another process meanwhile
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _check_upload(client, run_id: str, bundle_dir: Path, doc: Mapping[str, Any]) -> None:
    """Every file of the bundle arrived in the run's artifact store with its size."""
    stored = {Path(a.path).name: a.file_size for a in client.list_artifacts(run_id, "bundle") if not a.is_dir}
    for name in [*doc["files"], BUNDLE_FILE]:
        size = (bundle_dir / name).stat().st_size
        if stored.get(name) != size:
            raise RegistryError(f"{name}: the artifact store holds {stored.get(name)} bytes, the bundle {size}")


def register_bundle(bundle_dir: str | Path, tracking_uri: str, model_name: str | None = None,
                    alias: str | None = "candidate", artifact_location: str | None = None,
                    experiment_name: str = "export", run_name: str | None = None) -> dict[str, Any]:
    """Register a verified bundle that passed its parity gate as a new model version; returns its summary
    (``model``, ``version``, ``alias``, ``run_id``, ``source``, ``integrity``, ``uri``)."""
    bundle_dir = Path(bundle_dir)
    try:
        bundle = load_bundle(bundle_dir)
    except BundleError as e:
        raise RegistryError(f"refusing to register {bundle_dir}: {e}") from e
    doc = bundle.doc
    parity = doc.get("parity") or {}
    if parity.get("passed") is not True:
        raise RegistryError(f"refusing to register {bundle_dir}: its parity gate did not pass")
    task = str(doc["task"])
    name = model_name or default_model_name(doc)
    prov = doc.get("provenance") or {}
    training = prov.get("mlflow") or {}
    train_run_id = training.get("run_id")
    snapshot = prov.get("dataset_snapshot")
    _, mlflow_exc = _mlflow()
    client = _client(tracking_uri)
    run_id = None
    version = None
    created_model = False
    try:
        parent = None
        if train_run_id:
            try:
                exp_id = client.get_run(train_run_id).info.experiment_id
                parent = train_run_id
            except mlflow_exc as e:
                log.warning("training run %s is not in %s (%s): the export run goes to experiment %r",
                            train_run_id, tracking_uri, e, experiment_name)
        if parent is None:
            exp_id = _experiment_id(client, experiment_name, artifact_location, tracking_uri)
        tags = {INTEGRITY_TAG: doc["integrity"], TASK_TAG: task, "bundle.name": bundle_dir.name,
                "vision.export": "true"}
        if parent:
            tags["mlflow.parentRunId"] = parent
        if train_run_id:
            tags["training.run_id"] = train_run_id
        run = client.create_run(exp_id, run_name=run_name or f"export-{bundle_dir.name}", tags=tags)
        run_id = run.info.run_id
        client.log_artifacts(run_id, str(bundle_dir), "bundle")
        _check_upload(client, run_id, bundle_dir, doc)
        params = {"bundle": bundle_dir.name, "task": task, "precisions": ",".join(sorted(doc["models"])),
                  "opset": prov.get("opset"), "checkpoint": prov.get("checkpoint"), "model_name": name,
                  "dataset_snapshot": snapshot}
        for k, v in params.items():
            if v is not None:
                client.log_param(run_id, k, str(v)[:6000])
        for k, v in _flat_metrics(doc).items():
            client.log_metric(run_id, k, v)
        client.set_terminated(run_id, "FINISHED")

        try:
            client.create_registered_model(name, tags={TASK_TAG: task},
                                           description=f"Edge bundles ({task}) registered by export.py")
            created_model = True
        except mlflow_exc as e:
            if _error_code(e) != "RESOURCE_ALREADY_EXISTS":
                raise
            existing = client.get_registered_model(name)
            other = (existing.tags or {}).get(TASK_TAG)
            if other and other != task:
                raise RegistryError(f"registered model {name!r} holds {other!r} bundles, this one is {task!r}; "
                                    f"choose another register.model_name") from None
        mv_tags = {INTEGRITY_TAG: doc["integrity"], TASK_TAG: task, "bundle.name": bundle_dir.name,
                   "parity.passed": "true", "labels": ",".join(doc.get("labels") or [])[:5000]}
        if snapshot:
            mv_tags["dataset.snapshot_id"] = str(snapshot)
        if train_run_id:
            mv_tags["training.run_id"] = train_run_id
            mv_tags["training.run_uri"] = f"runs:/{train_run_id}"
            if training.get("tracking_uri"):
                mv_tags["training.tracking_uri"] = str(training["tracking_uri"])
        key = PRIMARY_METRIC.get(task)
        for model, v in ((doc.get("metrics") or {}).get(f"test_{key}") or {}).items():
            mv_tags[f"test_{key}.{model}"] = f"{v:.6f}"
        link = None
        if train_run_id and parent and _is_remote(tracking_uri):
            link = f"{tracking_uri.rstrip('/')}/#/experiments/{exp_id}/runs/{train_run_id}"
        mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/bundle", run_id=run_id, tags=mv_tags,
                                         run_link=link, description=f"bundle {bundle_dir.name} ({task}), integrity "
                                                                    f"{doc['integrity']}")
        version = mv.version
        if mv.status != "READY":
            raise RegistryError(f"model version {name}/{version} is {mv.status}, not READY")
        if alias:
            client.set_registered_model_alias(name, alias, version)
    except Exception as e:
        _rollback(client, tracking_uri, name, version, created_model, run_id)
        what = e if isinstance(e, RegistryError) else f"{type(e).__name__}: {getattr(e, 'message', e)}"
        raise RegistryError(f"registering {bundle_dir} as a version of {name!r} in {tracking_uri} failed and was "
                            f"rolled back (no version, alias or export run left): {what}") from e
    out = {"model": name, "version": str(version), "alias": alias, "run_id": run_id,
           "source": f"{run.info.artifact_uri}/bundle", "integrity": doc["integrity"], "tracking_uri": tracking_uri,
           "uri": f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"}
    log.info("registered %s as %s version %s%s", bundle_dir, name, version, f" (alias {alias})" if alias else "")
    return out


def _rollback(client, uri: str, name: str, version: str | None, created_model: bool, run_id: str | None) -> None:
    steps = []
    if version is not None:
        steps.append(lambda: client.delete_model_version(name, version))
    if created_model:
        def drop_model():
            if not client.search_model_versions(f"name='{name}'"):
                client.delete_registered_model(name)
        steps.append(drop_model)
    if run_id is not None:
        def drop_artifacts():
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            art = client.get_run(run_id).info.artifact_uri
            get_artifact_repository(art, tracking_uri=uri).delete_artifacts("bundle")
        steps.append(drop_artifacts)
        steps.append(lambda: client.set_terminated(run_id, "FAILED"))
        steps.append(lambda: client.delete_run(run_id))
    for step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - keep undoing the rest
            log.error("rollback step failed: %s", e)


def promote(tracking_uri: str, model_name: str, alias: str, version: str | int | None = None,
            from_alias: str | None = None) -> dict[str, Any]:
    """Point ``alias`` at ``version`` (or at the version ``from_alias`` points at); returns the move."""
    if not model_name or not alias:
        raise ConfigError("promote needs model_name=NAME and alias=ALIAS")
    if (version is None) == (from_alias is None):
        raise ConfigError("promote needs exactly one of version=N and from_alias=ALIAS")
    _, mlflow_exc = _mlflow()
    client = _client(tracking_uri)
    try:
        mv = (client.get_model_version_by_alias(model_name, from_alias) if from_alias is not None
              else client.get_model_version(model_name, str(version)))
    except mlflow_exc as e:
        what = f"alias {from_alias!r}" if from_alias is not None else f"version {version}"
        raise RegistryError(f"registered model {model_name!r} has no {what} in {tracking_uri}: "
                            f"{getattr(e, 'message', e)}") from e
    if not (mv.tags or {}).get(INTEGRITY_TAG):
        raise RegistryError(f"{model_name} version {mv.version} has no {INTEGRITY_TAG!r} tag (not registered by "
                            f"export.py): the runtime could not verify it, refusing to promote it")
    previous = None
    try:
        previous = str(client.get_model_version_by_alias(model_name, alias).version)
    except mlflow_exc:
        pass
    try:
        client.set_registered_model_alias(model_name, alias, mv.version)
    except mlflow_exc as e:
        raise RegistryError(f"cannot set alias {alias!r} of {model_name!r}: {getattr(e, 'message', e)}") from e
    out = {"model": model_name, "alias": alias, "version": str(mv.version), "previous": previous,
           "uri": f"models:/{model_name}@{alias}", "tracking_uri": tracking_uri}
    log.info("%s@%s: version %s -> %s", model_name, alias, previous, mv.version)
    return out


# -- export.py ---------------------------------------------------------------------------------------

def training_store(doc: Mapping[str, Any]) -> str | None:
    training = (doc.get("provenance") or {}).get("mlflow") or {}
    return training.get("tracking_uri") if training.get("run_id") else None


def register_exported(cfg: DictConfig, out_dir: Path, doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The registration step of ``export.py`` (after the gate passed and the bundle was written); None when
    registration is off or there is no tracking store (an untracked training and no ``register.tracking_uri``)."""
    reg = cfg.get("register")
    if not reg or not reg.get("enabled"):
        return None
    uri = reg.get("tracking_uri") or training_store(doc)
    if not uri:
        prov = (doc.get("provenance") or {}).get("mlflow") or {}
        if not prov.get("run_id"):
            log.info("bundle not registered: the training run was not tracked (logger=none); set "
                     "register.tracking_uri=... to register it")
            return None
        uri = f"sqlite:///{cfg.paths.mlflow_db}"
    try:
        return register_bundle(out_dir, uri, model_name=reg.get("model_name"), alias=reg.get("alias"),
                               artifact_location=reg.get("artifact_location"), experiment_name=cfg.experiment_name,
                               run_name=f"export-{out_dir.name}")
    except RegistryError as e:
        raise RegistryError(f"{e}\nthe verified bundle stays at {out_dir}; register it later with: "
                            f"python export.py register bundle={out_dir}") from e


def run_action(cfg: DictConfig) -> Any:
    """``export.py action=export|register|promote``: returns what the action made (bundle path or a summary)."""
    from vision.config import validate
    from vision.config.schema import ExportSchema

    action = str(cfg.get("action") or "export")
    if action not in ("export", "register", "promote"):
        raise ConfigError(f"action={action}: expected export, register or promote")
    if action != "export" and OmegaConf.is_missing(cfg, "checkpoint"):
        cfg.checkpoint = ""  # only the export needs a checkpoint
    validate(cfg, ExportSchema)
    if action == "export":
        from vision.export.pipeline import run

        return run(cfg)
    reg = cfg.register
    uri = reg.get("tracking_uri") or f"sqlite:///{cfg.paths.mlflow_db}"
    if action == "promote":
        p = cfg.promote
        res = promote(uri, p.get("model_name"), p.get("alias"), p.get("version"), p.get("from_alias"))
    else:
        if not cfg.get("bundle"):
            raise ConfigError("action=register needs bundle=PATH (an exported bundle folder)")
        bundle_dir = Path(str(cfg.bundle))
        try:
            doc = load_bundle(bundle_dir).doc
        except BundleError as e:
            raise RegistryError(f"refusing to register {bundle_dir}: {e}") from e
        uri = reg.get("tracking_uri") or training_store(doc) or uri
        res = register_bundle(bundle_dir, uri, model_name=reg.get("model_name"), alias=reg.get("alias"),
                              artifact_location=reg.get("artifact_location"), experiment_name=cfg.experiment_name)
    print(json.dumps(res))
    return res
