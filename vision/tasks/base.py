"""The Lightning base every task builds on."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import seed_everything
from torch import nn

from vision.data.sampling import mix_seed
from vision.errors import CheckpointError

CHECKPOINT_KEY = "vision"


class VisionTask(pl.LightningModule):
    """Optimizer and scheduler from config, per-epoch reseeding, and self-describing checkpoints.

    Every checkpoint carries ``checkpoint["vision"]``: the task name, labels, the resolved config,
    the preprocessing spec and the data cards, so export and evaluation need nothing else.
    """

    task_name: ClassVar[str] = "base"

    def __init__(self, model: nn.Module, optimizer: Callable[..., Any], scheduler: Callable[..., Any] | None = None,
                 monitor: str = "val/loss", monitor_mode: str = "min", labels: list[str] | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"task.monitor_mode must be 'min' or 'max', got {monitor_mode!r}")
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.labels = list(labels or [])
        self.seed = int(seed)
        self.vision_meta: dict[str, Any] = {}

    def forward(self, x):
        return self.model(x)

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(optimizer=opt, total_steps=int(self.trainer.estimated_stepping_batches))
        if not isinstance(sched, dict):
            sched = {"scheduler": sched, "interval": "epoch"}
        return {"optimizer": opt, "lr_scheduler": sched}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Every random draw of a step (dropout, stochastic layers) depends only on (seed, epoch, batch):
        # a resumed run replays exactly what an uninterrupted one would have drawn.
        seed_everything(mix_seed(self.seed, self.current_epoch, batch_idx), verbose=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = {"task": self.task_name, "labels": self.labels, **self.vision_meta}
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "state_dict"):
            meta["datamodule"] = dm.state_dict()
        checkpoint[CHECKPOINT_KEY] = _plain(meta)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_task(checkpoint, self.task_name, "resume")

    # -- evaluation across processes -----------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def gather_by_index(self, parts: dict[str, list[torch.Tensor]], index: str = "index") -> dict[str, np.ndarray]:
        """Concatenate per-batch tensors and, under DDP, gather them from every process, keeping one copy
        of each sample (a distributed sampler repeats samples to even out the shards), in index order."""
        out = {}
        for k, chunks in parts.items():
            t = torch.cat(chunks) if chunks else torch.empty(0)
            if self.distributed:
                t = self.all_gather(t).flatten(0, 1)
            out[k] = t.cpu().numpy()
        if self.distributed and len(out.get(index, ())):
            _, first = np.unique(out[index], return_index=True)
            out = {k: v[first] for k, v in out.items()}
        return out

    def gather_dict(self, local: dict[Any, Any]) -> dict[Any, Any]:
        """Merge a per-process ``{sample index: result}`` dict across DDP processes (identity otherwise)."""
        if not self.distributed:
            return local
        import torch.distributed as dist

        shards: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(shards, local)
        merged: dict[Any, Any] = {}
        for shard in shards:
            merged.update(shard or {})
        return merged


def _plain(value: Any) -> Any:
    """Plain dicts and lists all the way down: checkpoints are loaded with ``weights_only``, which refuses
    OmegaConf containers (a Hydra list such as ``data.mix.schedule`` reaching the data summary)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def check_task(checkpoint: dict[str, Any], expected: str, origin: str) -> dict[str, Any]:
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or "task" not in meta:
        raise CheckpointError(f"{origin}: the checkpoint was not written by this toolkit (no '{CHECKPOINT_KEY}' metadata)")
    if meta["task"] != expected:
        raise CheckpointError(f"{origin}: the checkpoint is a {meta['task']!r} checkpoint, not {expected!r}")
    return meta
