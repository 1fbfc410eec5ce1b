"""Tracking to a real ``mlflow server`` on loopback (SQLite backend, proxied artifacts)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from conftest import run_entry, tiny_train_args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not become healthy in 120 s")
    yield url, tmp_path
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_training_logs_to_a_real_server(mlflow_server, tiny_folder):
    url, server_dir = mlflow_server
    work = server_dir / "work"
    work.mkdir()
    run_entry("train.py", work, *tiny_train_args(tiny_folder, "trainer.max_epochs=2", "run_name=srv",
                                                  f"logger.tracking_uri={url}"))
    assert not (work / "mlruns.db").exists(), "the local store was used instead of the server"
    run_id = json.loads((work / "outputs" / "srv" / "run.json").read_text())["mlflow"]["run_id"]
    client = mlflow.MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "val/acc")) == 2
    assert run.data.params["trainer.max_epochs"] == "2"
    arts = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert "plots/confusion_matrix.png" in arts
    # artifacts really went through the server into its artifact store
    stored = list((server_dir / "server-artifacts").rglob("confusion_matrix.png"))
    assert stored and stored[0].stat().st_size > 1000
