"""Config composition and validation: bad keys and types fail before any work, naming the key."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import vision.config  # noqa: F401
from conftest import REPO, run_entry, tiny_train_args
from vision.config import validate
from vision.config.schema import ExportSchema, TrainSchema
from vision.errors import ConfigError


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("experiment", ["camera_health", "neu_det"])
def test_shipped_experiments_validate(experiment):
    cfg = _compose("train", f"experiment={experiment}")
    validate(cfg, TrainSchema)
    assert cfg.experiment_name == experiment
    assert cfg.callbacks.checkpoint.monitor == "val/acc"
    assert cfg.trainer.precision == "32-true"


def test_gpu_accelerator_switches_to_bf16():
    cfg = _compose("train", "trainer.accelerator=gpu")
    assert cfg.trainer.precision == "bf16-mixed"
    assert _compose("train", "trainer=gpu").trainer.precision == "bf16-mixed"


def test_export_config_validates():
    validate(_compose("export", "checkpoint=x.ckpt"), ExportSchema)


@pytest.mark.parametrize("override, message", [
    ("+model.widht=0.5", "unknown config key 'model.widht'"),
    ("model.width_mult=wide", "config key 'model.width_mult' = 'wide' has the wrong type"),
    ("data.batch_size=3.5", "config key 'data.batch_size' = 3.5 has the wrong type"),
    ("+trainer.max_epoch=3", "unknown config key 'trainer.max_epoch'"),
    ("+task.optimizer.learning_rate=0.1", "unknown config key 'task.optimizer.learning_rate'"),
    ("+colour=red", "unknown config key 'colour'"),
    ("seed=abc", "config key 'seed' = 'abc' has the wrong type"),
    ("+data.augment.0.probability=0.3", "unknown config key 'data.augment[0].probability'"),
])
def test_bad_keys_are_named(override, message):
    cfg = _compose("train", override)
    with pytest.raises(ConfigError) as e:
        validate(cfg, TrainSchema)
    assert message in str(e.value)


def test_train_py_fails_before_any_work(tmp_path, tiny_folder):
    proc = run_entry("train.py", tmp_path, *tiny_train_args(tiny_folder, "+model.depth=3"), check=False)
    assert proc.returncode == 2
    assert "unknown config key 'model.depth'" in proc.stderr
    assert not (tmp_path / "mlruns.db").exists()
    assert not list(tmp_path.rglob("*.ckpt"))


def test_struct_mode_rejects_unknown_override(tmp_path, tiny_folder):
    proc = run_entry("train.py", tmp_path, *tiny_train_args(tiny_folder, "trainer.max_epoch=3"), check=False)
    assert proc.returncode != 0 and "max_epoch" in (proc.stderr + proc.stdout)
