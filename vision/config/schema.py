"""Top-level schemas of the recipes (the groups below them are checked against their targets)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union


@dataclass
class TrainSchema:
    task: Any
    model: Any
    data: Any
    trainer: Any
    paths: Any
    logger: Any = None
    callbacks: Any = field(default_factory=dict)
    experiment_name: str = "default"
    run_name: str = "run"
    seed: int = 0
    resume: Union[bool, str] = False
    test_after_fit: bool = True
    log_checkpoint: bool = True


@dataclass
class ExportSchema:
    checkpoint: str
    paths: Any
    output_dir: str
    action: str = "export"
    bundle: Optional[str] = None
    register: Any = None
    promote: Any = None
    model_card: Any = None
    name: str = "bundle"
    run_name: str = "export"
    experiment_name: str = "export"
    precisions: list = field(default_factory=lambda: ["fp32", "int8"])
    opset: int = 17
    batch_size: int = 1
    calibration: Any = None
    parity: Any = None
    data: Optional[Any] = None
    logger: Any = None
    providers: list = field(default_factory=lambda: ["CPUExecutionProvider"])
    progress: bool = True
    decode: Any = None
