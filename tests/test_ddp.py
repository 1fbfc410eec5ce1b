"""Lightning DDP through config (``trainer=ddp``): two CPU processes (gloo), one writer."""
from __future__ import annotations

import json

import mlflow
import pytest

from conftest import run_entry, tiny_train_args

pytestmark = pytest.mark.slow


def test_two_process_ddp_has_one_writer_and_gathered_metrics(tmp_path, tiny_folder):
    run_entry("train.py", tmp_path, *tiny_train_args(tiny_folder, "trainer=ddp", "trainer.devices=2",
                                                     "trainer.max_epochs=2", "run_name=ddp", "data.num_workers=0"),
              timeout=900)
    out = tmp_path / "outputs" / "ddp"
    # one checkpoint set, written by rank 0 only
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) in (
        ["best-epoch000.ckpt", "last.ckpt"], ["best-epoch001.ckpt", "last.ckpt"])
    assert not list((out / "checkpoints").glob("*.tmp*"))
    run = json.loads((out / "run.json").read_text())

    # one MLflow run holding every metric once per epoch (not once per process)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    exp = client.get_experiment_by_name("classification")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == run["mlflow"]["run_id"]
    assert runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "val/acc")) == 2

    # the held-out report counts each test image exactly once, although the distributed sampler
    # padded the shards (3 test images over 2 processes)
    splits = json.loads((out / "splits.json").read_text())
    n_test = len(splits["splits"]["test"])
    assert n_test % 2 == 1, "the test needs an odd split to exercise de-duplication"
    assert sum(m["support"] for m in run["test"]["per_class"].values()) == n_test

    # and matches a single-process evaluation of the same checkpoint (the export parity evaluation)
    run_entry("export.py", tmp_path, f"checkpoint={out}", "name=b", "precisions=[fp32]")
    bundle = json.loads((tmp_path / "bundles" / "b" / "bundle.json").read_text())
    assert bundle["metrics"]["test_top1"]["torch"] == pytest.approx(run["test"]["top1"])
