"""A run killed after its first epoch and resumed ends exactly where an uninterrupted run ends."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import mlflow
import torch

from conftest import PY, REPO, make_tiny_folder, run_entry, tiny_train_args


def _epoch_of(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    except Exception:  # noqa: BLE001 - not written yet
        return None


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    folder = make_tiny_folder(tmp_path / "data", per_class=30)
    args = tiny_train_args(folder, "trainer.max_epochs=5", "model.dropout=0.1")
    run_entry("train.py", tmp_path, *args, "run_name=straight")

    # Same run, killed (SIGKILL) once the first epoch's checkpoint is on disk.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([PY, str(REPO / "train.py"), *args, "run_name=killed"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "outputs" / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and _epoch_of(last) is not None:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = _epoch_of(last)
    assert killed_at is not None and killed_at < 4
    assert not list(last.parent.glob("*.tmp")), "a partial checkpoint file was left behind"
    run_id_before = (tmp_path / "outputs" / "killed" / "mlflow_run_id").read_text().strip()

    # resume=auto: what a requeued cluster job runs (continues because last.ckpt exists)
    run_entry("train.py", tmp_path, *args, "run_name=killed", "resume=auto")

    a = torch.load(tmp_path / "outputs" / "straight" / "checkpoints" / "last.ckpt", map_location="cpu",
                   weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4 and a["global_step"] == b["global_step"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"weights differ after resume: {k}"

    # The resumed run continues the same MLflow run, with the same final metrics.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run_id_after = (tmp_path / "outputs" / "killed" / "mlflow_run_id").read_text().strip()
    assert run_id_after == run_id_before
    ra = client.get_run((tmp_path / "outputs" / "straight" / "mlflow_run_id").read_text().strip())
    rb = client.get_run(run_id_after)
    assert rb.data.tags.get("resumed") == "true" and rb.info.status == "FINISHED"
    for key in ("val/acc", "val/loss", "test/acc"):
        assert abs(ra.data.metrics[key] - rb.data.metrics[key]) < 1e-6, key
    assert len(client.get_metric_history(rb.info.run_id, "val/acc")) >= 5


def test_resume_modes(tmp_path):
    """false: fresh; true: last.ckpt or a clear error; auto: last.ckpt when present, else fresh; a path."""
    import pytest
    from omegaconf import OmegaConf

    from vision.errors import ConfigError
    from vision.training import _resume_path

    ckpt_dir = tmp_path / "checkpoints"
    cfg = lambda r: OmegaConf.create({"resume": r})  # noqa: E731
    assert _resume_path(cfg(False), ckpt_dir) is None
    assert _resume_path(cfg("auto"), ckpt_dir) is None
    with pytest.raises(ConfigError, match="last.ckpt does not exist"):
        _resume_path(cfg(True), ckpt_dir)
    with pytest.raises(ConfigError, match="not found"):
        _resume_path(cfg(str(tmp_path / "nope.ckpt")), ckpt_dir)
    ckpt_dir.mkdir()
    (ckpt_dir / "last.ckpt").write_bytes(b"x")
    assert _resume_path(cfg("auto"), ckpt_dir) == str(ckpt_dir / "last.ckpt")
    assert _resume_path(cfg(True), ckpt_dir) == str(ckpt_dir / "last.ckpt")
