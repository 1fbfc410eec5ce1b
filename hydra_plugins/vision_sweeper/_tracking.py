"""The sweep's MLflow parent run (search space, trial values, best trial, comparison plot, trials table) and
the trials table and plot themselves."""
from __future__ import annotations

import csv
import json
import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vision.tracking import PARENT_RUN_TAG, TRIAL_TAG, prepare_store, resolve_store

from ._space import describe, to_override_value

log = logging.getLogger(__name__)
ARTIFACT_DIR = "sweep"


def _param_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key.lstrip("+~"))


class ParentRun:
    """One MLflow run per sweep; the trials' runs carry ``mlflow.parentRunId`` = its id."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, resumed: bool) -> None:
        self.client, self.run_id, self.experiment_id, self.resumed = client, run_id, experiment_id, resumed
        self._logged_steps = {int(m.step) for m in client.get_metric_history(run_id, "trial_value")}

    @classmethod
    def open(cls, logger_cfg: Mapping[str, Any], run_id: str | None, run_name: str,
             tags: Mapping[str, str]) -> ParentRun:
        """Reuse ``run_id`` (a resumed sweep) when the store has it, else create the parent run."""
        name = str(logger_cfg.get("experiment_name") or "default")
        prepare_store(logger_cfg.get("tracking_uri"), name, logger_cfg.get("artifact_location"))
        tracking_uri, artifact_location = resolve_store(logger_cfg.get("tracking_uri"),
                                                        logger_cfg.get("artifact_location"))
        client = MlflowClient(tracking_uri)
        if run_id:
            try:
                run = client.get_run(run_id)
            except MlflowException:
                log.warning("the sweep's parent run %s is not in %s: starting a new parent run", run_id, tracking_uri)
            else:
                client.update_run(run_id, status="RUNNING")
                for k, v in tags.items():
                    client.set_tag(run_id, k, str(v))
                return cls(client, run_id, run.info.experiment_id, resumed=True)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # created meanwhile by another process
                exp_id = client.get_experiment_by_name(name).experiment_id
        else:
            exp_id = exp.experiment_id
        run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        return cls(client, run.info.run_id, exp_id, resumed=False)

    # -- what the parent records -------------------------------------------------------------------------
    def log_search_space(self, space: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        params = {f"space.{_param_key(k)}": describe(d) for k, d in space.items()}
        params.update({f"sweep.{k}": str(v)[:6000] for k, v in settings.items()})
        try:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        except MlflowException as e:  # a resumed study whose settings changed: params are immutable
            log.warning("parent run %s keeps its first search-space params (%s)", self.run_id, str(e)[:200])
        self.client.log_dict(self.run_id, {k: describe(d) for k, d in space.items()},
                             f"{ARTIFACT_DIR}/search_space.json")

    def log_progress(self, rows: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None, direction: str,
                     objective: str, space: Mapping[str, Any]) -> None:
        now = int(time.time() * 1000)
        metrics = []
        for r in rows:
            if r["state"] == "COMPLETE" and r["number"] not in self._logged_steps:
                metrics.append(Metric("trial_value", float(r["value"]), now, int(r["number"])))
                self._logged_steps.add(r["number"])
        tags = {"sweep.trials_complete": str(sum(r["state"] == "COMPLETE" for r in rows)),
                "sweep.trials_failed": str(sum(r["state"] == "FAIL" and not r.get("interrupted") for r in rows))}
        if best is not None:
            metrics += [Metric("best_value", float(best["value"]), now, int(best["number"])),
                        Metric("best_trial", float(best["number"]), now, int(best["number"]))]
            tags.update({"best.trial": str(best["number"]), "best.value": f"{best['value']:.6g}",
                         "best.mlflow_run_id": str(best.get("mlflow_run_id") or "")})
            tags.update({f"best.{_param_key(k)}": to_override_value(v)[:5000] for k, v in best["params"].items()})
        self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        with tempfile.TemporaryDirectory() as tmp:
            write_table(rows, Path(tmp), space)
            if best is not None:
                (Path(tmp) / "best_trial.json").write_text(json.dumps(best, indent=1, default=str))
            if any(r["state"] == "COMPLETE" for r in rows):
                plot_comparison(rows, space, direction, objective, Path(tmp) / "comparison.png")
            self.client.log_artifacts(self.run_id, tmp, ARTIFACT_DIR)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    # -- the children ------------------------------------------------------------------------------------
    def children(self, status: str | None = None) -> list[Any]:
        query = f"tags.`{PARENT_RUN_TAG}` = '{self.run_id}'"
        if status:
            query += f" and attributes.status = '{status}'"
        return self.client.search_runs([self.experiment_id], query, max_results=5000)

    def kill_orphans(self) -> int:
        """Children an interrupted sweep left RUNNING are KILLED (their trials run again)."""
        runs = self.children("RUNNING")
        for run in runs:
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(runs)

    def child_of(self, number: int) -> str | None:
        runs = [r for r in self.children() if r.data.tags.get(TRIAL_TAG) == str(number)]
        return runs[0].info.run_id if runs else None

    def mark_failed(self, number: int, run_id: str | None, params: Mapping[str, Any], error: str,
                    run_name: str) -> str:
        """A failed trial is a FAILED child run: its own run if training got that far, else a new one."""
        run_id = run_id or self.child_of(number)
        if run_id:
            try:
                if self.client.get_run(run_id).info.status == "RUNNING":
                    self.client.set_terminated(run_id, "FAILED")
                self.client.set_tag(run_id, "sweep.error", error[:5000])
                return run_id
            except MlflowException:
                pass
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={PARENT_RUN_TAG: self.run_id, TRIAL_TAG: str(number),
                                           "sweep.error": error[:5000]})
        rid = run.info.run_id
        self.client.log_batch(rid, params=[Param(_param_key(k), to_override_value(v)[:6000])
                                           for k, v in params.items()])
        self.client.set_terminated(rid, "FAILED")
        return rid


# -- table and plot -------------------------------------------------------------------------------------
def write_table(rows: Sequence[Mapping[str, Any]], folder: Path, space: Mapping[str, Any]) -> None:
    keys = list(space)
    (folder / "trials.json").write_text(json.dumps(list(rows), indent=1, default=str))
    cols = ["number", "state", "value", *keys, "duration_s", "mlflow_run_id", "retry_of", "interrupted", "error"]
    with open(folder / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get("number"), r.get("state"), r.get("value"),
                        *(to_override_value(r["params"][k]) if k in r["params"] else "" for k in keys),
                        r.get("duration_s"), r.get("mlflow_run_id") or "", r.get("retry_of", ""),
                        r.get("interrupted", ""), (r.get("error") or "")[:300]])


def plot_comparison(rows: Sequence[Mapping[str, Any]], space: Mapping[str, Any], direction: str, objective: str,
                    path: Path) -> Path:
    """Objective per trial (with the best so far), then the objective against each parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None and math.isfinite(r["value"])]
    failed = [r for r in rows if r["state"] == "FAIL" and not r.get("interrupted")]
    keys = list(space)
    n = 1 + len(keys)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    ax = axes[0][0]
    xs = [r["number"] for r in done]
    ys = [r["value"] for r in done]
    ax.scatter(xs, ys, color="tab:blue", label="complete", zorder=3)
    best, bx, by = None, [], []
    for x, y in sorted(zip(xs, ys)):
        if best is None or (y > best if direction == "maximize" else y < best):
            best = y
        bx.append(x)
        by.append(best)
    if bx:
        ax.step(bx, by, where="post", color="tab:orange", label="best so far")
    if failed:
        lo = min(ys) if ys else 0.0
        ax.scatter([r["number"] for r in failed], [lo] * len(failed), marker="x", color="tab:red", label="failed")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} per trial ({direction})")
    ax.legend(fontsize=7)
    for i, key in enumerate(keys, start=1):
        ax = axes[i // cols][i % cols]
        d = space[key]
        pts = [(r["params"].get(key), r["value"]) for r in done if key in r["params"]]
        if isinstance(d, CategoricalDistribution):
            labels = [to_override_value(c) for c in d.choices]
            pos = {to_override_value(c): j for j, c in enumerate(d.choices)}
            ax.scatter([pos.get(to_override_value(v), -1) for v, _ in pts], [y for _, y in pts], color="tab:blue")
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        else:
            ax.scatter([float(v) for v, _ in pts], [y for _, y in pts], color="tab:blue")
            if isinstance(d, (FloatDistribution, IntDistribution)) and d.log:
                ax.set_xscale("log")
                narrow = math.log10(max(d.high, 1e-300) / max(d.low, 1e-300)) < 2  # label 1-2-5 within 2 decades
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel(objective)
    for j in range(n, nrows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
