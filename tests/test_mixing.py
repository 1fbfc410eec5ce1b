"""Real + synthetic mixing: a fixed synthetic share in every batch, or a schedule over epochs."""
from __future__ import annotations

import pytest

from conftest import make_tiny_folder, run_entry, tiny_train_args
from vision.data.classification import ClassificationDataModule
from vision.data.readers import ImageFolderSource
from vision.errors import DataError


def _dm(tmp_path, **mix):
    real = make_tiny_folder(tmp_path / "real", per_class=20, seed=1)
    syn = make_tiny_folder(tmp_path / "syn", per_class=20, seed=2)
    dm = ClassificationDataModule({"real": ImageFolderSource(str(real)),
                                   "sim": ImageFolderSource(str(syn), kind="synthetic")},
                                  preprocess={"size": [32, 32]}, batch_size=8, mix=mix)
    dm.setup()
    return dm


def _shares(dm, epoch):
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(epoch)
    ds = loader.dataset
    return [sum(ds.samples[i].source == "sim" for i, _ in batch) for batch in loader.batch_sampler]


def test_fixed_fraction_in_every_batch(tmp_path):
    dm = _dm(tmp_path, synthetic_fraction=0.25)
    shares = _shares(dm, 0)
    assert shares and set(shares) == {2}
    assert dm.summary()["kinds"] == {"real": "real", "sim": "synthetic"}
    x, y, idx = next(iter(dm.train_dataloader()))
    ds = dm.dataset("train")
    assert x.shape == (8, 3, 32, 32) and sum(ds.samples[i].source == "sim" for i in idx.tolist()) == 2


def test_schedule_pretrains_on_synthetic_then_real(tmp_path):
    dm = _dm(tmp_path, schedule=[{"epochs": 2, "synthetic_fraction": 1.0}, {"synthetic_fraction": 0.0}])
    assert set(_shares(dm, 0)) == {8} and set(_shares(dm, 1)) == {8}
    assert set(_shares(dm, 2)) == {0} and set(_shares(dm, 7)) == {0}


def test_same_epoch_same_batches(tmp_path):
    dm = _dm(tmp_path, synthetic_fraction=0.5)
    s = dm.train_dataloader().batch_sampler
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(3)
    assert a == list(s)
    s.set_epoch(4)
    assert a != list(s)


def test_mix_without_a_synthetic_source_is_an_error(tmp_path):
    real = make_tiny_folder(tmp_path / "real", per_class=20)
    dm = ClassificationDataModule({"real": ImageFolderSource(str(real))}, preprocess={"size": [32, 32]},
                                  mix={"synthetic_fraction": 0.5})
    dm.setup()
    with pytest.raises(DataError, match="no source is synthetic"):
        dm.train_dataloader()
    with pytest.raises(DataError, match=r"schedule\[0\].synthetic_fraction must be in \[0, 1\]"):
        ClassificationDataModule({"real": ImageFolderSource(str(real))}, mix={"synthetic_fraction": 1.5})
    with pytest.raises(DataError, match=r"schedule\[1\].epochs must be an int >= 1"):
        ClassificationDataModule({"real": ImageFolderSource(str(real))},
                                 mix={"schedule": [{"synthetic_fraction": 1.0}, {"epochs": 0, "synthetic_fraction": 0}]})


def test_generated_folder_counts_as_synthetic(tmp_path):
    from synthetic.camera_health import generate_dataset

    root = generate_dataset(tmp_path / "ch", num_per_class=2, progress=False)
    assert ImageFolderSource(str(root)).kind == "synthetic"
    assert ImageFolderSource(str(make_tiny_folder(tmp_path / "r", per_class=2))).kind == "real"


def test_training_with_a_mix_runs(tmp_path):
    real = make_tiny_folder(tmp_path / "real", per_class=12, seed=1)
    syn = make_tiny_folder(tmp_path / "syn", per_class=12, seed=2)
    args = tiny_train_args(real, "trainer.max_epochs=2", "run_name=mix", "logger=none",
                           f"+data.sources.sim={{_target_: vision.data.readers.ImageFolderSource, root: '{syn}', kind: synthetic}}",
                           "data.mix.synthetic_fraction=0.5")
    run_entry("train.py", tmp_path, *args)
    import json

    summary = json.loads((tmp_path / "outputs" / "mix" / "run.json").read_text())
    slices = summary["test"]["slices"]
    test_keys = json.loads((tmp_path / "outputs" / "mix" / "splits.json").read_text())["splits"]["test"]
    assert slices["source"]["sim"]["num_images"] == sum(k.startswith("sim:") for k in test_keys) > 0
    assert slices["source"]["images"]["num_images"] == sum(k.startswith("images:") for k in test_keys) > 0
    assert slices["kind"]["synthetic"]["num_images"] == slices["source"]["sim"]["num_images"]
    assert set(slices["kind"]) == {"real", "synthetic"}


def test_a_hydra_schedule_in_the_checkpoint_metadata_stays_loadable(tmp_path):
    """A schedule given on the command line is a Hydra ListConfig inside the data summary; checkpoints
    are loaded with ``weights_only``, so the metadata must be plain (this failed a whole bench training)."""
    import pytest
    import torch
    from omegaconf import OmegaConf

    from vision.tasks.base import _plain

    schedule = OmegaConf.create([{"epochs": 3, "synthetic_fraction": 0.8}, {"synthetic_fraction": 0.2}])
    meta = {"task": "detection", "data_summary": {"mix": {"schedule": schedule}, "sizes": (1, 2)}}
    torch.save({"vision": meta}, tmp_path / "raw.ckpt")
    with pytest.raises(Exception, match="ListConfig"):
        torch.load(tmp_path / "raw.ckpt", weights_only=True)
    torch.save({"vision": _plain(meta)}, tmp_path / "plain.ckpt")
    back = torch.load(tmp_path / "plain.ckpt", weights_only=True)["vision"]
    assert back["data_summary"]["mix"]["schedule"] == [{"epochs": 3, "synthetic_fraction": 0.8},
                                                       {"synthetic_fraction": 0.2}]
    assert back["data_summary"]["sizes"] == (1, 2)
