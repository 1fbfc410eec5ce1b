"""Cluster launchers through Hydra's submitit plugin: the SLURM preset composes from the trainer
config, and the same plugin really runs a sweep with its local executor."""
from __future__ import annotations

import json

import mlflow
from hydra import compose, initialize_config_dir

from conftest import REPO, run_entry, tiny_train_args


def test_slurm_launcher_follows_the_trainer_config():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                                 "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # Lightning reads SLURM's environment: one task per device on every node
    assert (launcher.nodes, launcher.tasks_per_node) == (2, 4)
    assert launcher.partition == "gpu" and launcher.max_num_timeout > 0
    assert cfg.trainer.strategy._target_.endswith("DDPStrategy")


def test_submitit_local_sweep_runs_each_job_with_its_own_run(tmp_path, tiny_folder):
    run_entry("train.py", tmp_path, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
              *tiny_train_args(tiny_folder, "trainer.max_epochs=1", "seed=1,2"))
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    runs = [json.loads((sweeps[0] / str(i) / "run.json").read_text()) for i in (0, 1)]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    ids = {r["mlflow"]["run_id"] for r in runs}
    assert len(ids) == 2
    for rid in ids:
        run = client.get_run(rid)
        assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    assert {client.get_run(rid).data.params["seed"] for rid in ids} == {"1", "2"}
