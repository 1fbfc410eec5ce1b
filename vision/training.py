"""The training pipeline behind ``train.py``: validate, instantiate, fit, test, record."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor
from hydra.utils import instantiate
from lightning_fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, OmegaConf

from vision.callbacks import ThroughputMonitor
from vision.checkpointing import AtomicCheckpointIO, load_checkpoint
from vision.config import validate
from vision.config.schema import TrainSchema
from vision.data.cards import summary as cards_summary
from vision.data.splits import save_splits
from vision.errors import ConfigError
from vision.tracking import RunRecorder, prepare_store
from vision.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


def _resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    resume = cfg.resume
    if resume is False or resume in ("", "false", "False", None):
        return None
    if resume == "auto":  # continue when there is something to continue (a requeued cluster job)
        last = ckpt_dir / "last.ckpt"
        return str(last) if last.is_file() else None
    if resume is True or resume in ("true", "True", "last"):
        last = ckpt_dir / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"resume=true but {last} does not exist: give run_name=<the run to resume> "
                              f"or resume=<path to a .ckpt>")
        return str(last)
    path = Path(str(resume))
    if not path.is_file():
        raise ConfigError(f"resume={resume}: checkpoint file not found")
    return str(path)


def _task_name(cfg: DictConfig) -> str:
    from hydra.utils import get_class

    return get_class(cfg.task._target_).task_name


def _make_logger(cfg: DictConfig, out_dir: Path, resuming: bool):
    """The MLflow logger (``None`` with ``logger=none``); a resumed run continues its MLflow run.

    Creating it starts nothing: the run is opened on first use, by the main process only (under DDP,
    Lightning hands the other processes a dummy), so one training is one MLflow run.
    """
    if not cfg.get("logger"):
        return None
    run_id = None
    id_file = out_dir / RUN_ID_FILE
    if resuming and id_file.is_file():
        run_id = id_file.read_text().strip() or None
    prepare_store(cfg.logger.get("tracking_uri"), cfg.logger.get("experiment_name"), cfg.logger.get("artifact_location"))
    return instantiate(cfg.logger, run_id=run_id)


def run(cfg: DictConfig) -> float:
    """Train one recipe; returns the best value of the monitored metric (for sweepers)."""
    validate(cfg, TrainSchema)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_path = _resume_path(cfg, ckpt_dir)
    seed_everything(cfg.seed, workers=True, verbose=False)

    dm = instantiate(cfg.data)
    if ckpt_path:  # the resumed run keeps its own split, and a wrong checkpoint fails before any work
        meta = load_checkpoint(ckpt_path, task=_task_name(cfg))["vision"]
        if "datamodule" in meta:
            dm.load_state_dict(meta["datamodule"])
    dm.setup("fit")
    model = instantiate(cfg.model, num_classes=dm.num_classes)
    task = instantiate(cfg.task, model=model, labels=dm.labels, seed=cfg.seed)
    container = OmegaConf.to_container(cfg, resolve=True)
    task.vision_meta = {
        "config": container,
        "preprocess": dm.spec.to_dict(),
        "data_cards": cards_summary(dm.cards),
        "data_summary": dm.summary(),
    }

    logger = _make_logger(cfg, out_dir, resuming=ckpt_path is not None)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if logger is None:  # callbacks that only feed a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger if logger else False, callbacks=callbacks,
                                      plugins=[AtomicCheckpointIO()], default_root_dir=str(out_dir))
    # Under DDP every process runs this function; only the main one (global rank 0) writes the run's
    # files and its MLflow run, and only it saves checkpoints (Lightning), so there is a single writer.
    main = trainer.global_rank == 0
    if trainer.world_size > 1:  # held-out metrics are computed from data gathered from every process
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val|test)/")
    recorder = RunRecorder(logger if main else None)
    if main:
        config_file = atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        splits_file = save_splits(out_dir / "splits.json", dm.splits, dm.split_spec)
        if logger:
            atomic_write_text(out_dir / RUN_ID_FILE, logger.run_id)
            task.vision_meta["mlflow"] = {"run_id": logger.run_id, "tracking_uri": cfg.logger.get("tracking_uri")}
        recorder.log_context(cfg, dm.cards, dm.summary(), {"data": splits_file, "config": config_file},
                             resumed=ckpt_path is not None)

    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    ckpt_cb = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    best_score = ckpt_cb.best_model_score if ckpt_cb is not None else None
    if best_score is None:
        best_score = trainer.callback_metrics.get(task.monitor)
    score = float(best_score) if best_score is not None else float("nan")

    report: dict[str, Any] | None = None
    if cfg.test_after_fit:
        trainer.test(task, datamodule=dm, ckpt_path=best or None, verbose=False)
        report = getattr(task, "test_report", None)
    summary = {
        "output_dir": str(out_dir),
        "best_checkpoint": best,
        "last_checkpoint": str(ckpt_dir / "last.ckpt"),
        "monitor": task.monitor,
        "train_img_per_s": next((c.median for c in callbacks if isinstance(c, ThroughputMonitor)), None),
        "best_score": score,
        "test": {k: v for k, v in (report or {}).items()
                 if k in ("top1", "macro_f1", "per_class", "slices", "ap", "ap50", "ap75", "size", "num_images",
                          "num_gt", "rank1", "rank5", "rank10", "map", "minp", "cmc", "cross_camera", "reranked",
                          "num_queries", "num_valid", "num_invalid", "invalid_queries", "warnings", "artifacts")},
        "mlflow": {"run_id": recorder.run_id, "tracking_uri": cfg.logger.get("tracking_uri") if cfg.get("logger") else None},
    }
    if not main:
        return score
    atomic_write_json(out_dir / "run.json", summary)
    recorder.log_results(report, best, dm.labels, log_checkpoint=cfg.log_checkpoint)
    if logger:
        logger.experiment.log_metric(logger.run_id, f"best/{task.monitor}", score)
    log.info("best %s = %.4f; checkpoint %s", task.monitor, score, best)
    return score
