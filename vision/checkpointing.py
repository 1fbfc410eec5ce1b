"""Checkpoint I/O that never leaves a half-written file, and checkpoint loading for export/eval."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from vision.errors import CheckpointError
from vision.tasks.base import check_task
from vision.utils.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialise in memory, write to a temporary file, fsync, ``os.replace``: a kill mid-write
    leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Load a toolkit checkpoint safely (``weights_only``) and check which task wrote it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any decoding error with the file name
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    meta = check_task(ckpt, task, str(path)) if task else ckpt.get("vision")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint was not written by this toolkit")
    return ckpt
