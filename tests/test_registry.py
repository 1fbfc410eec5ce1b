"""The MLflow Model Registry for real: export.py registers bundles that pass the parity gate (local SQLite store of
the training run), ``export.py promote`` moves aliases, the runtime loads ``models:/NAME@ALIAS`` and refuses a
registered bundle whose files changed afterwards; a failed gate registers nothing, a failed registration rolls back.
Every bundle carries a generated MODEL_CARD.md."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
from mlflow.entities import ViewType

from conftest import PY, REPO, run_entry, run_runtime_without, tiny_train_args
from vision.runtime.bundle import BundleError, canonical_hash, load_bundle

MODEL = "toy-classification"  # the default name: <training experiment>-<task>


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    from conftest import make_tiny_folder

    work = tmp_path_factory.mktemp("registry")
    folder = make_tiny_folder(work / "tiny")
    run_entry("train.py", work, *tiny_train_args(folder, "trainer.max_epochs=3", "run_name=toy", "experiment_name=toy"))
    run = json.loads((work / "outputs" / "toy" / "run.json").read_text())
    uri = f"sqlite:///{work / 'mlruns.db'}"
    return type("Reg", (), {"work": work, "folder": folder, "uri": uri, "client": mlflow.MlflowClient(uri, uri),
                            "train_run": run["mlflow"]["run_id"]})


def _export(reg, name: str, *extra: str, check: bool = True):
    return run_entry("export.py", reg.work, "checkpoint=outputs/toy", f"name={name}", "calibration.num_samples=16",
                     "progress=false", *extra, check=check)


def _runtime(reg, bundle: str, *extra: str, env: dict | None = None, out: Path | None = None):
    args = [PY, "-m", "vision.runtime", bundle, str(reg.folder), *extra]
    if out is not None:
        args += ["--out", str(out)]
    e = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env={**e, **(env or {})})


def _source_dir(reg, version: str) -> Path:
    src = reg.client.get_model_version(MODEL, version).source
    assert src.startswith("file://"), src
    return Path(unquote(urlparse(src).path))


def test_export_registers_version_1_with_alias_candidate(reg):
    _export(reg, "b1")
    bundle = reg.work / "bundles" / "b1"
    doc = load_bundle(bundle).doc
    assert set(doc["files"]) == {"model_fp32.onnx", "model_int8.onnx", "MODEL_CARD.md", "parity_report.json",
                                 "calibration.json"}
    assert json.loads((bundle / "calibration.json").read_text()) == doc["calibration"]
    assert json.loads((bundle / "parity_report.json").read_text()) == doc["parity"]
    client = reg.client
    mv = client.get_model_version_by_alias(MODEL, "candidate")
    assert str(mv.version) == "1" and client.get_registered_model(MODEL).tags["task"] == "classification"
    tags = mv.tags
    assert tags["bundle.integrity"] == doc["integrity"] and tags["task"] == "classification"
    assert tags["training.run_id"] == reg.train_run and tags["training.run_uri"] == f"runs:/{reg.train_run}"
    assert "dataset.snapshot_id" not in tags  # the toy folder is not a curated snapshot
    # the version's run: an export run nested in the training run, holding the whole bundle
    run = client.get_run(mv.run_id)
    assert run.data.tags["mlflow.parentRunId"] == reg.train_run and run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_run(reg.train_run).info.experiment_id
    assert run.data.metrics["test_top1/onnx_int8"] == doc["metrics"]["test_top1"]["onnx_int8"]
    stored = _source_dir(reg, "1")
    assert sorted(p.name for p in stored.iterdir()) == sorted([*doc["files"], "bundle.json"])
    assert (stored / "bundle.json").read_bytes() == (bundle / "bundle.json").read_bytes()
    # the training run links to the version instead of holding a second copy of the files
    train = client.get_run(reg.train_run)
    assert train.data.tags["export.b1"] == f"models:/{MODEL}/1"
    assert {a.path for a in client.list_artifacts(reg.train_run, "export/b1")} == {"export/b1/parity.json"}


def test_model_card(reg):
    card = (reg.work / "bundles" / "b1" / "MODEL_CARD.md").read_text()
    for section in ("# Model card: b1", "## Intended use", "## Training data", "## Metrics", "### By slice",
                    "## Parity", "## int8 calibration", "## Known limits"):
        assert section in card, section
    assert "blobs, flat, stripes" in card and "32x32" in card
    assert "| images | real |" in card and "real 100.0%, synthetic (incl. refined) 0.0%" in card
    assert "Parity gate: **passed**" in card and "int8 top-1 drop" in card
    assert "`source`:" in card and "`kind`:" in card  # slices of the training run's test report
    assert "no 'unknown' class" in card and "The test split is small" in card


def test_promote_then_a_second_export_makes_version_2(reg):
    proc = run_entry("export.py", reg.work, "promote", f"model_name={MODEL}", "from_alias=candidate",
                     "alias=production")
    moved = json.loads(proc.stdout.strip().splitlines()[-1])
    assert moved == {"model": MODEL, "alias": "production", "version": "1", "previous": None,
                     "uri": f"models:/{MODEL}@production", "tracking_uri": f"sqlite:///{reg.work / 'mlruns.db'}"}
    _export(reg, "b2")
    client = reg.client
    assert str(client.get_model_version_by_alias(MODEL, "candidate").version) == "2"
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == "1"
    v2 = client.get_model_version(MODEL, "2")
    assert v2.tags["bundle.integrity"] == load_bundle(reg.work / "bundles" / "b2").doc["integrity"]
    # the same move with the Hydra key form, and the errors of promote
    run_entry("export.py", reg.work, "action=promote", f"promote.model_name={MODEL}", "promote.version=2",
              "promote.alias=staging")
    assert str(client.get_model_version_by_alias(MODEL, "staging").version) == "2"
    bad = run_entry("export.py", reg.work, "promote", f"model_name={MODEL}", "version=9", "alias=production",
                    check=False)
    assert bad.returncode == 2 and "has no version 9" in bad.stderr
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == "1"


def test_runtime_loads_models_uri_like_the_path(reg, tmp_path):
    cache = tmp_path / "cache"
    by_path, by_alias = tmp_path / "path.jsonl", tmp_path / "alias.jsonl"
    proc = _runtime(reg, str(reg.work / "bundles" / "b1"), out=by_path)
    assert proc.returncode == 0, proc.stderr
    proc = _runtime(reg, f"models:/{MODEL}@production", "--tracking-uri", reg.uri, "--cache-dir", str(cache),
                    out=by_alias)
    assert proc.returncode == 0, proc.stderr
    assert f"models:/{MODEL}@production (version 1)" in proc.stderr
    lines = by_alias.read_text().splitlines()
    assert len(lines) == 36 and lines == by_path.read_text().splitlines()
    integrity = load_bundle(reg.work / "bundles" / "b1").doc["integrity"]
    assert [p.name for p in (cache / MODEL).iterdir()] == [f"v1-{integrity[:12]}"]
    # by version, the tracking URI from the environment, the cached copy reused
    v2 = tmp_path / "v2.jsonl"
    proc = _runtime(reg, f"models:/{MODEL}/2", "--cache-dir", str(cache), env={"MLFLOW_TRACKING_URI": reg.uri},
                    out=v2)
    assert proc.returncode == 0, proc.stderr
    ref = tmp_path / "b2.jsonl"
    assert _runtime(reg, str(reg.work / "bundles" / "b2"), out=ref).returncode == 0
    assert v2.read_text() == ref.read_text()
    # the library API takes the URI too
    from vision.runtime.classify import Classifier

    b = load_bundle(f"models:/{MODEL}@candidate", tracking_uri=reg.uri, cache_dir=cache)
    assert b.source == f"models:/{MODEL}@candidate (version 2)"
    assert Classifier(b).labels == ["blobs", "flat", "stripes"]
    # errors: no tracking URI, an unknown alias
    proc = _runtime(reg, f"models:/{MODEL}@production", "--cache-dir", str(cache))
    assert proc.returncode == 2 and "MLFLOW_TRACKING_URI" in proc.stderr
    proc = _runtime(reg, f"models:/{MODEL}@nope", "--tracking-uri", reg.uri, "--cache-dir", str(cache))
    assert proc.returncode == 2 and "no alias 'nope'" in proc.stderr


def test_runtime_loads_models_uri_without_mlflow_or_torch(reg, tmp_path):
    """The device has neither MLflow nor torch: the registry is read with the standard library."""
    out = tmp_path / "alias.jsonl"
    argv = [f"models:/{MODEL}@production", str(reg.folder), "--tracking-uri", reg.uri, "--cache-dir",
            str(tmp_path / "cache"), "--out", str(out)]
    proc = run_runtime_without(argv, ("mlflow", "torch", "sqlalchemy"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    ref = tmp_path / "path.jsonl"
    assert _runtime(reg, str(reg.work / "bundles" / "b1"), out=ref).returncode == 0
    assert out.read_text() == ref.read_text() and len(ref.read_text().splitlines()) == 36
    # stores the runtime cannot read say what to do
    proc = _runtime(reg, f"models:/{MODEL}@production", "--tracking-uri", "postgresql://u@db/mlflow")
    assert proc.returncode == 2 and "mlflow server --backend-store-uri" in proc.stderr
    proc = _runtime(reg, f"models:/{MODEL}@production", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert proc.returncode == 2 and "no MLflow database" in proc.stderr


def test_bundle_changed_after_registration_is_refused(reg, tmp_path):
    stored = _source_dir(reg, "2")
    uri = f"models:/{MODEL}/2"
    # a flipped byte in the int8 model in the artifact store
    model = stored / "model_int8.onnx"
    original = model.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    try:
        proc = _runtime(reg, uri, "--tracking-uri", reg.uri, "--cache-dir", str(tmp_path / "c1"))
        assert proc.returncode == 2
        assert "changed after registration" in proc.stderr and "model_int8.onnx" in proc.stderr
        assert "sha256 mismatch" in proc.stderr
        assert not [p for p in (tmp_path / "c1" / MODEL).iterdir()]  # nothing refused stays in the cache
    finally:
        model.write_bytes(original)
    # bundle.json edited and its own integrity recomputed: self-consistent, but not what was registered
    meta = stored / "bundle.json"
    raw = meta.read_text()
    doc = json.loads(raw)
    doc["labels"] = ["blobs", "stripes", "flat"]
    doc["integrity"] = canonical_hash(doc)
    meta.write_text(json.dumps(doc))
    try:
        with pytest.raises(BundleError, match="was registered with .*changed after registration"):
            load_bundle(uri, tracking_uri=reg.uri, cache_dir=tmp_path / "c2")
    finally:
        meta.write_text(raw)
    # restored: it loads again; a damaged cached copy is fetched again rather than used
    cache = tmp_path / "c3"
    b = load_bundle(uri, tracking_uri=reg.uri, cache_dir=cache)
    cached = b.root / "model_int8.onnx"
    cached.write_bytes(cached.read_bytes()[:-5])
    again = load_bundle(uri, tracking_uri=reg.uri, cache_dir=cache)
    assert again.root == b.root and (again.root / "model_int8.onnx").read_bytes() == original


def test_parity_gate_failure_registers_nothing(reg):
    client = reg.client
    before = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    proc = _export(reg, "bad", "parity.max_int8_drop=-1.0", check=False)
    assert proc.returncode == 2 and "parity gate failed" in proc.stderr
    assert not (reg.work / "bundles" / "bad").exists()
    assert {v.version for v in client.search_model_versions(f"name='{MODEL}'")} == before
    runs = client.search_runs([e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)],
                              run_view_type=ViewType.ALL)
    assert "export-bad" not in {r.info.run_name for r in runs}


def test_failed_registration_rolls_back_and_register_action_retries(reg):
    client = reg.client
    proc = _export(reg, "b3", "register.model_name=rollback", "register.alias=latest", check=False)  # reserved alias
    assert proc.returncode == 2, proc.stderr
    assert "rolled back" in proc.stderr and "'latest'" in proc.stderr and "export.py register bundle=" in proc.stderr
    assert not client.search_registered_models("name='rollback'")
    runs = client.search_runs([client.get_run(reg.train_run).info.experiment_id], "attributes.run_name = 'export-b3'",
                              run_view_type=ViewType.ALL)
    assert len(runs) == 1 and runs[0].info.lifecycle_stage == "deleted" and runs[0].info.status == "FAILED"
    assert not client.list_artifacts(runs[0].info.run_id, "bundle")
    bundle = reg.work / "bundles" / "b3"
    load_bundle(bundle)  # the verified bundle stays
    proc = run_entry("export.py", reg.work, "register", f"bundle={bundle}", "model_name=rollback")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["model"] == "rollback" and out["version"] == "1" and out["alias"] == "candidate"
    mv = client.get_model_version_by_alias("rollback", "candidate")
    assert mv.tags["bundle.integrity"] == load_bundle(bundle).doc["integrity"]
