"""Benchmark of a sweep: a small Optuna (TPE) sweep of the classification recipe, 2 trials at a time.

Runs ``train.py -m experiment=camera_health hparams_search=camera_health_optuna`` (joblib launcher, worker
processes) on a small generated camera-health set (procedural frames, generated once before the timings),
first with MLflow tracking (a parent run, every trial a child run), then the same sweep with ``logger=none``.
Reports, as one JSON line printed last and written to bench/results/sweep.json: the trials completed, the
sweep's wall time, the best validation accuracy, and the tracking overhead (wall time with MLflow / without).

    .venv/bin/python bench/sweep.py [--trials 6] [--jobs 2] [train overrides ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# small enough for a few CPU-minutes: 6 classes x 40 frames, 64x48 input, width 0.25..0.75, 3 epochs
DATA = ["data.sources.camera_health.base=procedural", "data.sources.camera_health.num_per_class=40",
        "data.sources.camera_health.size=[96,72]", "data.preprocess.size=[48,64]", "data.batch_size=16"]
TRAIN = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "log_checkpoint=false"]


def pregenerate(work: Path, overrides: list[str]) -> None:
    """Generate the camera-health frames once, so neither timed sweep pays for it."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import vision.config  # noqa: F401  (resolvers)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=camera_health", f"paths.cache_dir={work / 'cache'}",
                                          *overrides])
        instantiate(cfg.data.sources.camera_health).ensure()


def sweep(work: Path, mode: str, trials: int, jobs: int, overrides: list[str], stamp: str) -> tuple[float, dict]:
    args = [sys.executable, str(REPO / "train.py"), "-m", "experiment=camera_health",
            "hparams_search=camera_health_optuna", f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.n_jobs={jobs}",
            f"hydra.sweeper.study_name=bench-{mode}-{stamp}", f"hydra.sweeper.storage=sqlite:///{work / 'optuna.db'}",
            f"hydra.sweep.dir={work / 'multirun' / mode}", f"paths.cache_dir={work / 'cache'}", *overrides]
    if mode == "none":
        args.append("logger=none")
    log = work / f"sweep-{mode}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(args, cwd=work, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} sweep failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return wall, json.loads((work / "multirun" / mode / "sweep.json").read_text())


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=2)
    ns, extra = ap.parse_known_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = REPO / "bench" / "results" / f"sweep-{stamp}"
    work.mkdir(parents=True)
    overrides = [*DATA, *TRAIN, *extra]
    pregenerate(work, overrides)

    wall, summary = sweep(work, "mlflow", ns.trials, ns.jobs, overrides, stamp)
    wall_none, summary_none = sweep(work, "none", ns.trials, ns.jobs, overrides, stamp)
    best = summary.get("best") or {}
    result = {
        "trials_completed": summary["trials_complete"],
        "wall_s": round(wall, 1),
        "best_metric": best.get("value"),
        "tracking_overhead": round(wall / wall_none, 3),
        "metric": summary["objective"],
        "best_params": best.get("params"),
        "trials_failed": summary["trials_failed"],
        "n_jobs": ns.jobs,
        "wall_s_without_tracking": round(wall_none, 1),
        "best_metric_without_tracking": (summary_none.get("best") or {}).get("value"),
        "mlflow_parent_run_id": summary["mlflow_parent_run_id"],
        "mlflow_store": f"sqlite:///{work / 'mlruns.db'}",
        "cpu_cores": os.cpu_count(),
        "overrides": overrides,
    }
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
