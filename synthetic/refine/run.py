"""The jobs behind ``python -m synthetic.refine train|apply`` (Hydra configs ``conf/refine.yaml`` and
``conf/refine_apply.yaml``): validate, check the data, train with Lightning + MLflow, or refine a dataset."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vision.config import validate
from vision.errors import CheckpointError, ConfigError, VisionError

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


@dataclasses.dataclass
class RefineSchema:
    data: Any
    model: Any
    trainer: Any
    paths: Any
    logger: Any = None
    callbacks: Any = dataclasses.field(default_factory=dict)
    experiment_name: str = "refine"
    run_name: str = "refine"
    seed: int = 0
    resume: Optional[str] = None
    log_checkpoint: bool = True


@dataclasses.dataclass
class ApplySchema:
    refiner: str
    input: str
    output: str
    paths: Any
    batch_size: int = 4
    progress: bool = True
    geometry_images: int = 16
    device: str = "cpu"
    run_name: str = "refine-apply"
    experiment_name: str = "refine"


def _instantiate(node: Any, **kw: Any) -> Any:
    """Hydra's instantiate, but a toolkit error raised by the target surfaces as itself (one clear line)."""
    try:
        return instantiate(node, **kw)
    except Exception as e:  # noqa: BLE001 - Hydra wraps the target's exception
        cause = e.__cause__
        while cause is not None and not isinstance(cause, VisionError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def check_compatible(meta: dict[str, Any], model, crop_size: int, frame_size: tuple[int, int], origin: str) -> None:
    """A checkpoint to continue from must match the run's mode, generator, crop size and frame size."""
    r = meta.get("refiner") or {}
    if r.get("mode") != model.mode:
        raise CheckpointError(f"{origin}: a {r.get('mode')!r} refiner, but this run has model.mode={model.mode}")
    if r.get("generator") != model.generator_config():
        raise CheckpointError(f"{origin}: generator {r.get('generator')} differs from this run's "
                              f"{model.generator_config()} (model.ngf / n_blocks / residual)")
    if r.get("crop_size") != crop_size:
        raise CheckpointError(f"{origin}: trained on {r.get('crop_size')}-px crops, this run has "
                              f"data.crop_size={crop_size}")
    if tuple(r.get("frame_size") or ()) != tuple(frame_size):
        fs = r.get("frame_size") or ["?", "?"]
        raise CheckpointError(f"{origin}: trained on {fs[0]}x{fs[1]} synthetic frames (a checkpoint from a different "
                              f"resolution), these synthetic frames are {frame_size[0]}x{frame_size[1]}")


def _resume_path(cfg: DictConfig) -> str | None:
    if not cfg.get("resume"):
        return None
    p = Path(str(cfg.resume))
    if not p.is_file():
        raise ConfigError(f"resume={cfg.resume}: checkpoint file not found")
    return str(p)


def _make_logger(cfg: DictConfig, out_dir: Path, resuming: bool):
    if not cfg.get("logger"):
        return None
    from vision.utils.io import atomic_write_text

    id_file = out_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() or None if resuming and id_file.is_file() else None
    logger = _instantiate(cfg.logger, run_id=run_id)
    atomic_write_text(id_file, logger.run_id)
    return logger


def _log_context(logger, cfg: DictConfig, data_summary: dict[str, Any], resumed: bool) -> None:
    from vision.tracking import RunRecorder

    sources = ["synthetic:" + s for s in data_summary["synthetic"]["inputs"]]
    sources += ["real:" + s for s in data_summary["real"]["inputs"]]
    RunRecorder(logger).log_context(cfg, [], data_summary, {}, resumed, task="refiner",
                                    tags={"refiner.mode": str(cfg.model.mode), "data.sources": ",".join(sources)[:5000]})


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a refiner; returns the run summary (also ``<output_dir>/run.json``)."""
    import pytorch_lightning as pl
    from lightning_fabric.utilities.seed import seed_everything

    from vision.checkpointing import AtomicCheckpointIO, load_checkpoint
    from vision.utils.io import atomic_write_json, atomic_write_text, sha256_file

    validate(cfg, RefineSchema)
    out_dir = Path(cfg.paths.output_dir)
    ckpt_path = _resume_path(cfg)
    seed_everything(cfg.seed, workers=True, verbose=False)
    model = _instantiate(cfg.model)
    dm = _instantiate(cfg.data)
    model.check_crop(dm.crop_size)
    dm.setup("fit")  # reads and checks every frame: bad input stops here, before training
    if ckpt_path:
        check_compatible(load_checkpoint(ckpt_path, task="refiner")["vision"], model, dm.crop_size, dm.frame_size,
                         ckpt_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = dm.summary()
    logger = _make_logger(cfg, out_dir, resuming=ckpt_path is not None)
    tracking = {"run_id": logger.run_id if logger else None,
                "tracking_uri": cfg.logger.get("tracking_uri") if cfg.get("logger") else None}
    model.vision_meta = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "refiner": {"crop_size": dm.crop_size, "frame_size": list(dm.frame_size), "real_size": list(dm.real.size),
                    "data": summary},
        "mlflow": tracking,
    }
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    callbacks = [_instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer: pl.Trainer = _instantiate(cfg.trainer, logger=logger if logger else False, callbacks=callbacks,
                                      plugins=[AtomicCheckpointIO()], default_root_dir=str(out_dir))
    if logger:
        _log_context(logger, cfg, summary, resumed=ckpt_path is not None)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    last = next((Path(c.last_model_path or c.best_model_path) for c in trainer.checkpoint_callbacks
                 if (c.last_model_path or c.best_model_path)), out_dir / "checkpoints" / "last.ckpt")
    metrics = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
    samples = [str(p) for c in callbacks for p in getattr(c, "paths", [])]
    result = {"output_dir": str(out_dir), "checkpoint": str(last),
              "checkpoint_sha256": sha256_file(last) if last.is_file() else None, "mode": model.mode,
              "crop_size": dm.crop_size, "frame_size": list(dm.frame_size), "metrics": metrics, "samples": samples,
              "mlflow": tracking, "data": summary, "steps": int(trainer.global_step)}
    atomic_write_json(out_dir / "run.json", result)
    if logger and cfg.log_checkpoint and last.is_file():
        logger.experiment.log_artifact(logger.run_id, str(last), "checkpoints")
        logger.experiment.log_artifact(logger.run_id, str(out_dir / "run.json"))
    log.info("refiner %s: %s (%s)", model.mode, last, metrics)
    return result


def apply(cfg: DictConfig) -> dict[str, Any]:
    """Refine a whole dataset folder; returns the summary written to ``<output>/refinement.json``."""
    from synthetic.refine.apply import Refiner, refine_dataset

    validate(cfg, ApplySchema)
    refiner = Refiner(cfg.refiner, device=cfg.device)
    return refine_dataset(refiner, cfg.input, cfg.output, batch_size=cfg.batch_size, progress=cfg.progress,
                          geometry_images=cfg.geometry_images)
