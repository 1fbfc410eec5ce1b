"""The classification recipe for real: train.py -> MLflow (SQLite) -> export.py -> runtime CLI."""
from __future__ import annotations

import json
import subprocess

import mlflow
import pytest
import torch

from conftest import PY, REPO, run_entry, run_runtime_without, tiny_train_args


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_tiny_folder

    work = tmp_path_factory.mktemp("e2e")
    folder = make_tiny_folder(work / "tiny")
    run_entry("train.py", work, *tiny_train_args(folder, "trainer.max_epochs=3", "run_name=e2e"))
    return work, folder


def test_run_folder_and_checkpoint(trained):
    work, _ = trained
    out = work / "outputs" / "e2e"
    run = json.loads((out / "run.json").read_text())
    assert (out / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(run["best_checkpoint"], map_location="cpu", weights_only=True)
    meta = ckpt["vision"]
    assert meta["task"] == "classification"
    assert meta["labels"] == ["blobs", "flat", "stripes"]
    assert meta["preprocess"]["size"] == [32, 32]
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert meta["datamodule"]["splits"] == splits
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["train"]) & set(splits["val"])
    # The toy classes are separable: three epochs learn them.
    assert run["test"]["top1"] >= 0.8, run["test"]
    assert run["train_img_per_s"] > 0


def test_mlflow_records_everything(trained):
    work, _ = trained
    run_info = json.loads((work / "outputs" / "e2e" / "run.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    run = client.get_run(run_info["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.arch"] == "resnet18" and params["model.width_mult"] == "0.25"
    assert params["trainer.max_epochs"] == "3"
    tags = run.data.tags
    assert len(tags["git.commit"]) == 40 or tags["git.commit"] == "unknown"
    assert tags["data.sources"] == "images"
    # per-step and per-epoch metrics
    steps = client.get_metric_history(run.info.run_id, "train/loss_step")
    epochs = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(steps) >= 3 and len(epochs) == 3
    for key in ("test/acc", "test/f1/blobs", "test/precision/flat", "test/recall/stripes", "best/val/acc"):
        assert key in run.data.metrics, key

    def names(path=None):
        return {a.path for a in client.list_artifacts(run.info.run_id, path)}

    assert {"config", "data", "environment", "eval", "plots", "checkpoints"} <= names()
    assert "config/config.yaml" in names("config")
    assert "plots/confusion_matrix.png" in names("plots") and "plots/curves.png" in names("plots")
    assert any(p.endswith(".ckpt") for p in names("checkpoints"))
    local = client.download_artifacts(run.info.run_id, "environment/packages.json", str(work))
    assert json.loads(open(local).read())["torch"].startswith("2.")
    summary = json.loads(open(client.download_artifacts(run.info.run_id, "data/summary.json", str(work))).read())
    assert summary["labels"] == ["blobs", "flat", "stripes"]


def test_export_bundle_runtime_and_tamper(trained):
    work, folder = trained
    run_entry("export.py", work, "checkpoint=outputs/e2e", "name=b1", "calibration.num_samples=16", "progress=false")
    bundle = work / "bundles" / "b1"
    doc = json.loads((bundle / "bundle.json").read_text())
    assert set(doc["files"]) == {"model_fp32.onnx", "model_int8.onnx", "MODEL_CARD.md", "parity_report.json",
                                 "calibration.json"}
    assert doc["parity"]["passed"] and doc["parity"]["onnx_fp32"]["max_abs_logit_diff"] < 1e-3
    assert doc["preprocess"]["size"] == [32, 32] and doc["labels"] == ["blobs", "flat", "stripes"]
    assert doc["provenance"]["mlflow"]["run_id"]
    assert doc["calibration"]["split"] == "train" and len(doc["calibration"]["fp32_nodes"]) == 2
    # never overwrite a bundle
    again = run_entry("export.py", work, "checkpoint=outputs/e2e", "name=b1", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr

    # the runtime CLI, one JSON line per image
    out = work / "results.jsonl"
    proc = subprocess.run([PY, "-m", "vision.runtime", str(bundle), str(folder), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 36 and all(r["label"] in doc["labels"] for r in recs)
    acc = sum(r["label"] == r["file"].split("/")[-2] for r in recs) / len(recs)
    assert acc >= 0.8

    # a tampered model file is refused with a clear error
    model = bundle / "model_int8.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = subprocess.run([PY, "-m", "vision.runtime", str(bundle), str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "sha256 mismatch" in proc.stderr and "model_int8.onnx" in proc.stderr


def test_parity_gate_failure_leaves_no_bundle(trained):
    work, _ = trained
    proc = run_entry("export.py", work, "checkpoint=outputs/e2e", "name=bad", "parity.max_int8_drop=-1.0",
                     "calibration.num_samples=8", "progress=false", check=False)
    assert proc.returncode == 2
    assert "parity gate failed" in proc.stderr and "int8 top-1 drops" in proc.stderr
    assert not (work / "bundles" / "bad").exists()
    assert not [p for p in (work / "bundles").iterdir() if p.name.startswith(".bad")]


def test_runtime_imports_no_torch(trained):
    """The runtime runs with torch made unimportable (as on a device without it)."""
    work, folder = trained
    run_entry("export.py", work, "checkpoint=outputs/e2e", "name=notorch", "precisions=[fp32]", "progress=false")
    proc = run_runtime_without([str(work / "bundles" / "notorch"), str(folder), "--precision", "fp32", "--out",
                                str(work / "nt.jsonl")], ("torch", "torchvision"))
    assert proc.returncode == 0, proc.stderr
    assert len((work / "nt.jsonl").read_text().splitlines()) == 36


def test_checkpoint_of_another_task_is_refused(trained, tmp_path):
    work, folder = trained
    best = json.loads((work / "outputs" / "e2e" / "run.json").read_text())["best_checkpoint"]
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    ckpt["vision"]["task"] = "detection"
    other = tmp_path / "detector.ckpt"
    torch.save(ckpt, other)
    proc = run_entry("export.py", work, f"checkpoint={other}", "name=other", check=False)
    assert proc.returncode == 2 and "detector.ckpt" in proc.stderr and "'detection'" in proc.stderr
    proc = run_entry("train.py", work, *tiny_train_args(folder, "trainer.max_epochs=1", "run_name=wrong",
                                                        f"resume={other}"), check=False)
    assert proc.returncode == 2
    assert "is a 'detection' checkpoint, not 'classification'" in proc.stderr
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    proc = run_entry("export.py", work, f"checkpoint={plain}", "name=plain", check=False)
    assert proc.returncode == 2 and "plain.pt: not a Lightning checkpoint" in proc.stderr


def test_fp32_parity_tolerance_is_enforced(trained):
    work, _ = trained
    proc = run_entry("export.py", work, "checkpoint=outputs/e2e", "name=strict", "precisions=[fp32]",
                     "parity.fp32_atol=-1.0", "parity.fp32_rtol=0.0", "progress=false", check=False)
    assert proc.returncode == 2 and "ONNX fp32 logits differ from PyTorch" in proc.stderr
    assert not (work / "bundles" / "strict").exists()
