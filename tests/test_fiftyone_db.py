"""End-to-end tests of the FiftyOne database setup in ``vision.curation.db``.

FiftyOne reads its config once per process and keeps a mongod alive while the
process runs, so every FiftyOne step runs in a fresh subprocess with a clean
environment (temporary HOME and database folder, no inherited FIFTYONE_*).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pymongo
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain `pytest` (not `python -m pytest`)
    sys.path.insert(0, str(REPO))

from vision.curation.db import find_mongod, prepare_mongod_libs  # noqa: E402

RESULT_PREFIX = "RESULT:"
DATASET_NAME = "vision-test-persistence"
LABELS = ["person", "vehicle", "person"]

# --- code run in subprocesses ---------------------------------------------

CREATE_SCRIPT = """
import json, os, sys
from pathlib import Path
from PIL import Image
from vision.curation.db import import_fiftyone, database_info

db_dir, img_dir, name, labels = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
fo = import_fiftyone(database_dir=db_dir)
info = database_info()
# never write into a database other than the temporary one
assert os.path.realpath(info["dbpath"]) == os.path.realpath(db_dir), info
assert name not in fo.list_datasets()

samples = []
for i, label in enumerate(labels):
    path = Path(img_dir) / f"frame_{i:03d}.png"
    Image.new("RGB", (32, 24), color=(60 * i, 120, 200)).save(path)
    samples.append(
        fo.Sample(
            filepath=str(path),
            ground_truth=fo.Classification(label=label, confidence=0.5 + 0.1 * i),
        )
    )
dataset = fo.Dataset(name)
dataset.add_samples(samples)
dataset.persistent = True
print("RESULT:" + json.dumps({
    "info": info,
    "count": len(dataset),
    "sample_ids": sorted(s.id for s in dataset),
    "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
}))
"""

RELOAD_AND_DELETE_SCRIPT = """
import json, os, sys
from vision.curation.db import import_fiftyone, database_info

db_dir, name = sys.argv[1], sys.argv[2]
fo = import_fiftyone(database_dir=db_dir)
import fiftyone.core.odm.database as fodb

info = database_info()
assert os.path.realpath(info["dbpath"]) == os.path.realpath(db_dir), info
listed_before = name in fo.list_datasets()
dataset = fo.load_dataset(name)
gt_field = dataset.get_field_schema()["ground_truth"]
result = {
    "info": info,
    "listed_before": listed_before,
    "persistent": dataset.persistent,
    "count": len(dataset),
    "sample_ids": sorted(s.id for s in dataset),
    "samples": sorted(
        [os.path.basename(s.filepath), s.ground_truth.label, round(s.ground_truth.confidence, 3)]
        for s in dataset
    ),
    "gt_type": gt_field.document_type.__name__,
    "label_counts": dataset.count_values("ground_truth.label"),
    "files_exist": all(os.path.isfile(s.filepath) for s in dataset),
}
collection = dataset._sample_collection_name
dataset.delete()
result["exists_after_delete"] = fo.dataset_exists(name)
result["listed_after_delete"] = name in fo.list_datasets()
result["collection_left"] = collection in fodb.get_db_conn().list_collection_names()
print("RESULT:" + json.dumps(result))
"""

EXTERNAL_SCRIPT = """
import json, os, sys
import psutil
from vision.curation.db import import_fiftyone, database_info

uri, name = sys.argv[1], sys.argv[2]
fo = import_fiftyone(database_uri=uri)
info = database_info()
dataset = fo.Dataset(name)
dataset.add_sample(
    fo.Sample(filepath="/nonexistent/cam01/frame_000.png",
              ground_truth=fo.Classification(label="person"))
)
dataset.persistent = True
children = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
print("RESULT:" + json.dumps({
    "info": info,
    "config_uri": fo.config.database_uri,
    "env_uri": os.environ.get("FIFTYONE_DATABASE_URI"),
    "children": children,
}))
"""

# --- helpers ---------------------------------------------------------------


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)  # isolates ~/.fiftyone (config, default DB, uid)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return env


def _run(script: str, env: dict[str, str], *args: str, timeout: float = 90) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"subprocess failed ({proc.returncode})\n--- stdout\n{proc.stdout}\n"
        f"--- stderr\n{proc.stderr}"
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise AssertionError(f"no result line\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")


def _procs_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(text in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _running_fiftyone_db_services() -> list[int]:
    me = psutil.Process().username()
    pids = []
    for proc in psutil.process_iter(["cmdline", "username"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["username"] == me and "--51-service" in cmd:
                i = cmd.index("--51-service")
                if cmd[i + 1 : i + 2] == ["db"]:
                    pids.append(proc.pid)
        except (psutil.Error, ValueError):
            pass
    return pids


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_leftover_processes(tmp_path):
    """Fail (and clean up) if a process using tmp_path outlives the test."""
    yield
    deadline = time.monotonic() + 20
    leftovers = _procs_mentioning(str(tmp_path))
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.25)
        leftovers = _procs_mentioning(str(tmp_path))
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert not leftovers, f"processes left running: {[p.pid for p in leftovers]}"


# --- tests -----------------------------------------------------------------


@pytest.mark.usefixtures("no_leftover_processes")
def test_embedded_db_persists_across_processes(tmp_path):
    running = _running_fiftyone_db_services()
    if running:
        pytest.skip(
            f"FiftyOne database service(s) already running (pids {running}); "
            "FiftyOne would attach to them instead of using a temporary "
            "database_dir. Close other FiftyOne sessions and re-run."
        )
    env = _clean_env(tmp_path)
    db_dir = tmp_path / "fo-db"
    img_dir = tmp_path / "images"
    img_dir.mkdir()

    created = _run(
        CREATE_SCRIPT, env, str(db_dir), str(img_dir), DATASET_NAME, json.dumps(LABELS)
    )
    info1 = created["info"]
    assert info1["mode"] == "embedded"
    assert info1["mongod_version"].startswith("6.0.")
    assert created["count"] == 3
    libs_dir = prepare_mongod_libs()
    assert libs_dir is not None
    # (cv2, imported by fiftyone, prepends its own entry later on)
    assert str(libs_dir) in created["ld_library_path"].split(os.pathsep)
    assert len(list(img_dir.glob("*.png"))) == 3

    # Wait for the first process's mongod to stop, so the reload below runs
    # against a freshly started mongod reading the files on disk.
    try:
        psutil.Process(info1["pid"]).wait(timeout=20)
    except psutil.NoSuchProcess:
        pass

    reloaded = _run(RELOAD_AND_DELETE_SCRIPT, env, str(db_dir), DATASET_NAME)
    assert reloaded["info"]["pid"] != info1["pid"]
    assert reloaded["listed_before"] is True
    assert reloaded["persistent"] is True
    assert reloaded["count"] == 3
    assert reloaded["sample_ids"] == created["sample_ids"]
    assert reloaded["samples"] == [
        ["frame_000.png", "person", 0.5],
        ["frame_001.png", "vehicle", 0.6],
        ["frame_002.png", "person", 0.7],
    ]
    assert reloaded["gt_type"] == "Classification"
    assert reloaded["label_counts"] == {"person": 2, "vehicle": 1}
    assert reloaded["files_exist"] is True
    assert reloaded["exists_after_delete"] is False
    assert reloaded["listed_after_delete"] is False
    assert reloaded["collection_left"] is False
    # nothing written to the default location under the (temporary) HOME
    assert not (tmp_path / "home" / ".fiftyone" / "var" / "lib" / "mongo").exists()


@pytest.mark.usefixtures("no_leftover_processes")
def test_external_mongodb_via_database_uri(tmp_path):
    mongod = find_mongod()
    libs_dir = prepare_mongod_libs()
    assert mongod is not None and libs_dir is not None

    dbpath = tmp_path / "external-db"
    dbpath.mkdir()
    port = _free_port()
    uri = f"mongodb://127.0.0.1:{port}"
    log_path = tmp_path / "mongod.log"
    server_env = dict(os.environ)
    server_env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(libs_dir), *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep))]
    )
    server = subprocess.Popen(
        [
            str(mongod), "--dbpath", str(dbpath), "--port", str(port),
            "--bind_ip", "127.0.0.1", "--nounixsocket", "--logpath", str(log_path),
        ],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = log_path.read_text()[-3000:] if log_path.exists() else ""
                    pytest.fail(f"mongod did not start (rc={server.poll()})\n{log}")
                time.sleep(0.2)

        env = _clean_env(tmp_path)
        # only an embedded mongod would use this; it must stay untouched
        local_dir = tmp_path / "must-stay-unused"
        env["FIFTYONE_DATABASE_DIR"] = str(local_dir)
        name = "vision-test-external"

        result = _run(EXTERNAL_SCRIPT, env, uri, name)
        assert result["info"]["mode"] == "external"
        assert result["info"]["pid"] == server.pid
        assert result["info"]["dbpath"] == str(dbpath)
        assert result["config_uri"] == uri == result["env_uri"]
        assert not any("mongod" in c or "--51-service" in c for c in result["children"])
        assert not local_dir.exists()
        assert not (tmp_path / "home" / ".fiftyone" / "var" / "lib" / "mongo").exists()

        # look at the server directly, without FiftyOne
        assert "fiftyone" in client.list_database_names()
        doc = client["fiftyone"]["datasets"].find_one({"name": name})
        assert doc is not None and doc["persistent"] is True
        assert client["fiftyone"][doc["sample_collection_name"]].count_documents({}) == 1
    finally:
        client.close()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
