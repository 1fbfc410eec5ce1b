"""Tracking to a real ``mlflow server`` on loopback (SQLite backend, proxied artifacts; PostgreSQL too when
Debian's server binaries are installed): training logs there, 8 concurrent runs lose nothing, and bundles are
registered through the server and loaded by the runtime as ``models:/NAME@ALIAS``."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from conftest import PY, run_entry, run_runtime_without, tiny_train_args

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server_at(folder: Path, backend_uri: str | None = None, workers: int = 1):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite in ``folder`` unless ``backend_uri``), artifacts proxied into
    ``folder/server-artifacts``; yields its URL and stops it afterwards."""
    port = _free_port()
    backend_uri = backend_uri or f"sqlite:///{folder / 'server.db'}"
    log_path = folder / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(MLFLOW_BIN), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", backend_uri,
                             "--artifacts-destination", str(folder / "server-artifacts"), "--workers", str(workers)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log_path.read_text()[-3000:]}")
        else:
            raise RuntimeError(f"mlflow server did not become healthy in 180 s: {log_path.read_text()[-3000:]}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)  # the server and its workers (its own process group)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@pytest.fixture
def mlflow_server(tmp_path):
    with mlflow_server_at(tmp_path) as url:
        yield url, tmp_path


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


# -- concurrent runs -------------------------------------------------------------------------------------

N_RUNS, N_STEPS = 8, 25
WORKER = r"""
import hashlib, sys, time
from mlflow import MlflowClient
url, exp_id, k, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
client = MlflowClient(url)
run = client.create_run(exp_id, run_name=f"worker-{k}", tags={"worker": str(k)})
rid = run.info.run_id
print(rid, flush=True)
while time.time() < start:  # every worker starts logging at the same moment
    time.sleep(0.01)
client.log_param(rid, "worker", k)
for step in range(N_STEPS):
    client.log_metric(rid, "loss", 1.0 / (k + 1) + step * 1e-3, step=step)
    client.log_metric(rid, "worker_step", k * 1000 + step, step=step)
client.log_text(rid, f"worker {k}\n" * 1000, "notes/worker.txt")
client.log_dict(rid, {"worker": k, "payload": [k] * 500}, "report/summary.json")
client.set_terminated(rid, "FINISHED")
""".replace("N_STEPS", str(N_STEPS))


def _concurrent_runs(url: str, server_dir: Path) -> None:
    client = mlflow.MlflowClient(url)
    exp_id = client.create_experiment("concurrency")
    start = time.time() + 8  # time for the 8 interpreters to import mlflow
    procs = [subprocess.Popen([PY, "-c", WORKER, url, exp_id, str(k), str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(N_RUNS)]
    run_ids = {}
    for k, p in enumerate(procs):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"worker {k} failed:\n{err[-3000:]}"
        run_ids[k] = out.split()[0]
    runs = client.search_runs([exp_id], max_results=100)
    assert len(runs) == N_RUNS and {r.info.run_id for r in runs} == set(run_ids.values())
    for k, rid in run_ids.items():
        run = client.get_run(rid)
        assert run.info.status == "FINISHED" and run.data.params["worker"] == str(k)
        for key, value in (("loss", lambda s: 1.0 / (k + 1) + s * 1e-3), ("worker_step", lambda s: k * 1000 + s)):
            hist = sorted(client.get_metric_history(rid, key), key=lambda m: m.step)
            assert [m.step for m in hist] == list(range(N_STEPS)), (k, key)
            assert all(abs(m.value - value(m.step)) < 1e-9 for m in hist), (k, key)
        arts = {a.path: a.file_size for a in client.list_artifacts(rid, "notes")}
        arts.update({a.path: a.file_size for a in client.list_artifacts(rid, "report")})
        text = f"worker {k}\n" * 1000
        assert set(arts) == {"notes/worker.txt", "report/summary.json"} and arts["notes/worker.txt"] == len(text)
        with tempfile.TemporaryDirectory() as d:
            got = Path(client.download_artifacts(rid, "notes/worker.txt", d)).read_text()
            assert hashlib.sha256(got.encode()).hexdigest() == hashlib.sha256(text.encode()).hexdigest()
            summary = json.loads(Path(client.download_artifacts(rid, "report/summary.json", d)).read_text())
            assert summary == {"worker": k, "payload": [k] * 500}
    # and they are in the server's own artifact store, one folder per run
    stored = list((server_dir / "server-artifacts").rglob("worker.txt"))
    assert len(stored) == N_RUNS


def test_eight_concurrent_runs_sqlite(tmp_path):
    with mlflow_server_at(tmp_path, workers=2) as url:
        _concurrent_runs(url, tmp_path)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def postgres_server():
    """A throwaway PostgreSQL cluster from Debian's server binaries on 127.0.0.1 (trust auth); yields its URI."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql to run this test")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres system user
        runuser = shutil.which("runuser")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = None
        if not runuser or pw is None:
            pytest.skip("running as root without a 'postgres' user or runuser: cannot start PostgreSQL")
        as_user = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="vision-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if as_user:
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    started = False
    try:
        init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                               "--encoding=UTF8", "--no-sync"], capture_output=True, text=True, timeout=300)
        if init.returncode != 0:
            pytest.skip(f"initdb failed, cannot start PostgreSQL: {init.stderr[-1500:]}")
        log = root / "pg.log"
        if as_user:
            log.touch()
            os.chown(log, pw.pw_uid, pw.pw_gid)
        start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "120",
                                "-o", f"-p {port} -k {sock} -h 127.0.0.1 -c fsync=off", "start"],
                               capture_output=True, text=True, timeout=180)
        if start.returncode != 0:
            pytest.skip(f"PostgreSQL did not start: {start.stderr[-800:]} {log.read_text()[-1500:]}")
        started = True
        create = subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                                 "-U", "postgres", "mlflow"], capture_output=True, text=True, timeout=60)
        assert create.returncode == 0, create.stderr
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"  # psycopg2-binary is installed
    finally:
        if started:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_eight_concurrent_runs_postgresql(tmp_path):
    pytest.importorskip("psycopg2", reason="MLflow on PostgreSQL needs psycopg2")
    with postgres_server() as db_uri, mlflow_server_at(tmp_path, backend_uri=db_uri, workers=2) as url:
        _concurrent_runs(url, tmp_path)


# -- the registry through a server ---------------------------------------------------------------------

def test_registry_through_a_real_server(mlflow_server, tiny_folder):
    """Train and export against the server: the bundle is registered there (artifacts proxied), the runtime
    loads it by alias through the server, and a file changed in the server's artifact store is refused."""
    url, server_dir = mlflow_server
    work = server_dir / "work"
    work.mkdir()
    run_entry("train.py", work, *tiny_train_args(tiny_folder, "trainer.max_epochs=2", "run_name=srv",
                                                  "experiment_name=cam", f"logger.tracking_uri={url}"))
    run_entry("export.py", work, "checkpoint=outputs/srv", "name=b1", "calibration.num_samples=16", "progress=false")
    assert not (work / "mlruns.db").exists(), "registered into a local store instead of the server"
    client = mlflow.MlflowClient(url)
    mv = client.get_model_version_by_alias("cam-classification", "candidate")
    bundle = work / "bundles" / "b1"
    from vision.runtime.bundle import load_bundle

    assert mv.tags["bundle.integrity"] == load_bundle(bundle).doc["integrity"]
    assert mv.source.startswith("mlflow-artifacts:")
    run_entry("export.py", work, "promote", "model_name=cam-classification", "from_alias=candidate",
              "alias=production", f"tracking_uri={url}")

    def runtime(spec: str, out: Path, cache: Path):  # as on a device: no MLflow, no torch
        return run_runtime_without([spec, str(tiny_folder), "--out", str(out), "--tracking-uri", url,
                                    "--cache-dir", str(cache)], ("mlflow", "torch"))

    by_path, by_alias = work / "path.jsonl", work / "alias.jsonl"
    assert runtime(str(bundle), by_path, work / "c0").returncode == 0
    proc = runtime("models:/cam-classification@production", by_alias, work / "c1")
    assert proc.returncode == 0, proc.stderr
    assert by_alias.read_text() == by_path.read_text() and len(by_path.read_text().splitlines()) == 36
    # a model file changed in the server's artifact store after registration
    stored = [p for p in (server_dir / "server-artifacts").rglob("model_int8.onnx") if p.parent.name == "bundle"]
    assert len(stored) == 1
    data = bytearray(stored[0].read_bytes())
    data[100] ^= 0x55
    stored[0].write_bytes(bytes(data))
    proc = runtime("models:/cam-classification@production", work / "x.jsonl", work / "c2")
    assert proc.returncode == 2 and "changed after registration" in proc.stderr and "sha256 mismatch" in proc.stderr
