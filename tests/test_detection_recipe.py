"""The detection recipe for real: detection data module (splits, letterbox targets, mixing), train.py ->
MLflow -> export.py (parity gate on AP through the runtime) -> runtime CLI on the bundle."""
from __future__ import annotations

import json
import subprocess

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PY, REPO, run_entry, shared
from vision.data.boxes import Box, DetectionSample
from vision.data.detection import write_coco
from vision.data.detection_module import DetectionDataModule
from vision.data.detection_sources import COCOSource, MOTSource
from vision.errors import DataError
from vision.tasks.detection import to_original


def make_toy_coco(root, n: int = 64, size: tuple[int, int] = (160, 120), seed: int = 0):
    """Bright 'people' (tall) and dark-red 'vehicles' (wide) on noise: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    w, h = size
    samples = []
    (root / "src").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            if rng.random() < 0.5:
                bw, bh, label, colour = int(rng.integers(12, 20)), int(rng.integers(36, 56)), "person", (230, 230, 230)
            else:
                bw, bh, label, colour = int(rng.integers(36, 56)), int(rng.integers(18, 26)), "vehicle", (200, 30, 30)
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img[y:y + bh, x:x + bw] = colour
            boxes.append(Box(float(x), float(y), float(x + bw), float(y + bh), label))
        p = root / "src" / f"{i:03d}.png"
        Image.fromarray(img).save(p)
        samples.append(DetectionSample(str(p), w, h, boxes, "toy", p.name, {"frame": i}))
    write_coco(samples, root / "coco", ["person", "vehicle"], images="copy")
    return root / "coco"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_coco(tmp_path_factory.mktemp("toy"))


def _dm(sources, **kw):
    kw.setdefault("preprocess", {"size": [64, 96]})
    return DetectionDataModule(sources, classes=["person", "vehicle"], batch_size=4, **kw)


def test_letterbox_targets_map_back_exactly(toy):
    dm = _dm({"toy": COCOSource(str(toy / "annotations.json"), verify_checksums=False)})
    dm.setup("fit")
    ds = dm.dataset("test")
    for i in range(len(ds)):
        x, t, idx = ds[i]
        s = ds.samples[idx]
        assert x.shape == (3, 64, 96)
        back = to_original(t["boxes"].numpy(), t["scale"], t["pad"], s.width, s.height)
        np.testing.assert_allclose(back, np.asarray([b.xyxy for b in s.boxes], np.float32), atol=1e-3)
        assert t["labels"].tolist() == [dm.labels.index(b.label) for b in s.boxes]


def test_block_split_keeps_frames_contiguous(toy):
    dm = _dm({"toy": COCOSource(str(toy / "annotations.json"), verify_checksums=False)},
             split={"train": 0.5, "val": 0.25, "test": 0.25})
    dm.setup("fit")
    frames = {k: sorted(s.meta["frame"] for s in v) for k, v in dm.splits.items()}
    assert max(frames["train"]) < min(frames["val"]) and max(frames["val"]) < min(frames["test"])
    assert sum(map(len, frames.values())) == 64


def test_unknown_label_names_the_file(toy, tmp_path):
    doc = json.loads((toy / "annotations.json").read_text())
    doc["categories"].append({"id": 99, "name": "dog"})
    doc["annotations"][0]["category_id"] = 99
    (tmp_path / "a.json").write_text(json.dumps(doc))
    dm = _dm({"toy": COCOSource(str(tmp_path / "a.json"), images_root=str(toy), verify_checksums=False)})
    with pytest.raises(DataError, match=r"000\.png.*unknown label 'dog'"):
        dm.setup("fit")


def test_augmented_batches_have_valid_boxes_and_ignore_regions(toy, tmp_path):
    doc = json.loads((toy / "annotations.json").read_text())
    doc["annotations"][0]["iscrowd"] = 1  # an ignore region rides along with the image
    (tmp_path / "a.json").write_text(json.dumps(doc))
    from albumentations import Affine, HorizontalFlip

    dm = _dm({"toy": COCOSource(str(tmp_path / "a.json"), images_root=str(toy), verify_checksums=False)},
             augment=[HorizontalFlip(p=0.5), Affine(scale=(0.5, 1.5), translate_percent=(-0.3, 0.3), p=1.0)],
             split={"train": 1.0, "val": 0.0, "test": 0.0}, assign={})
    with pytest.raises(DataError, match="split 'val' is empty"):
        dm.setup("fit")
    dm = _dm({"toy": COCOSource(str(tmp_path / "a.json"), images_root=str(toy), verify_checksums=False)},
             augment=[HorizontalFlip(p=0.5), Affine(scale=(0.5, 1.5), translate_percent=(-0.3, 0.3), p=1.0)],
             split={"train": 0.8, "val": 0.1, "test": 0.1})
    dm.setup("fit")
    assert any(b.attrs.get("iscrowd") for b in dm.splits["train"][0].boxes)
    n = 0
    for x, targets, index in dm.train_dataloader():
        for t in targets:
            b = t["boxes"]
            assert torch.isfinite(b).all()
            assert (b[:, 0] >= 0).all() and (b[:, 2] <= 96).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 64).all()
            assert ((b[:, 2] - b[:, 0]) >= 2).all() and ((b[:, 3] - b[:, 1]) >= 2).all()
            n += len(b)
        if 0 in index.tolist():
            t = targets[index.tolist().index(0)]
            assert t["ignore"].shape[1] == 4
    assert n > 0
    # the same epoch twice gives the same batches (seeded per epoch and sample)
    a = [b[0] for b in dm.train_dataloader()]
    c = [b[0] for b in dm.train_dataloader()]
    assert all(torch.equal(u, v) for u, v in zip(a, c))


def test_real_scenes_split_by_camera():
    """PETS trains (its last frames validate); TUD-Campus, another camera, is the whole test set."""
    pets, tud = shared("pets2009_s3mf1"), shared("tud_campus")
    dm = _dm({"pets": MOTSource(str(pets), card="pets2009_s3mf1"), "tud": MOTSource(str(tud), card="tud_campus")},
             split={"train": 0.85, "val": 0.15, "test": 0.0}, assign={"tud": "test"})
    dm.setup("fit")
    assert {s.source for s in dm.splits["test"]} == {"tud"} and len(dm.splits["test"]) == 71
    assert {s.source for s in dm.splits["train"]} == {"pets"}
    assert max(s.meta["frame"] for s in dm.splits["train"]) < min(s.meta["frame"] for s in dm.splits["val"])
    assert {c["name"] for c in dm.cards} == {"pets2009_s3mf1", "tud_campus"}


def test_mixed_batches_keep_the_synthetic_share(tmp_path, toy):
    from synthetic.detection_source import SceneDetectionSource

    syn = SceneDetectionSource(str(tmp_path / "cache"), scenes=2, cameras=1, frames=4, resolution=(160, 96),
                               progress=False)
    dm = _dm({"toy": COCOSource(str(toy / "annotations.json"), verify_checksums=False), "syn": syn},
             mix={"synthetic_fraction": 0.5}, steps_per_epoch=5)
    dm.setup("fit")
    syn_samples = [s for s in dm.splits["train"] if s.source == "syn"]
    assert syn_samples and all(s.meta["kind"] == "synthetic" and "condition" in s.meta and "params" in s.meta
                               for s in syn_samples)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 5
    for _, _, index in batches:
        sources = [dm.splits["train"][i].source for i in index.tolist()]
        assert sources.count("syn") == 2 and sources.count("toy") == 2
    # generated once, then reused from the cache (same folder, nothing rewritten)
    again = SceneDetectionSource(str(tmp_path / "cache"), scenes=2, cameras=1, frames=4, resolution=(160, 96),
                                 progress=False)
    assert again.root == syn.root
    mtime = (syn.root / "annotations.json").stat().st_mtime_ns
    again.load()
    assert (syn.root / "annotations.json").stat().st_mtime_ns == mtime


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy):
    work = tmp_path_factory.mktemp("det_e2e")
    run_entry("train.py", work, "experiment=detection_synthetic", "data=synthetic_scenes",
              "~data.sources.synthetic", "+data.sources.toy._target_=vision.data.detection_sources.COCOSource",
              f"+data.sources.toy.annotations={toy / 'annotations.json'}", "+data.sources.toy.verify_checksums=false",
              "data.preprocess.size=[96,128]", "model.width_mult=0.25", "data.batch_size=8", "data.steps_per_epoch=12",
              "data.split.train=0.65", "data.split.val=0.1", "data.split.test=0.25",
              "data.augment=[]", "task.optimizer.lr=0.01", "trainer.max_epochs=4", "trainer.enable_progress_bar=false",
              "trainer.log_every_n_steps=1", "run_name=det", timeout=900)
    return work


def test_training_learns_and_records(trained):
    out = trained / "outputs" / "det"
    run = json.loads((out / "run.json").read_text())
    assert run["monitor"] == "val/ap50"
    test = run["test"]
    assert test["ap50"] > 0.5, test  # the toy shapes are easy: a few dozen steps learn them
    assert set(test["size"]) == {"<50px", "50-150px", ">150px"}
    meta = torch.load(run["best_checkpoint"], map_location="cpu", weights_only=True)["vision"]
    assert meta["task"] == "detection" and meta["labels"] == ["person", "vehicle"]
    client = mlflow.MlflowClient(f"sqlite:///{trained / 'mlruns.db'}")
    r = client.get_run(run["mlflow"]["run_id"])
    for key in ("val/ap50", "test/ap50", "test/ap", "train/loss_step", "best/val/ap50"):
        assert key in r.data.metrics, key
    arts = {a.path for a in client.list_artifacts(r.info.run_id, "plots")}
    assert "plots/pr_curve.png" in arts and "plots/errors.png" in arts


def test_export_parity_gate_and_runtime(trained, toy, tmp_path):
    out = trained / "outputs" / "det"
    bundle = tmp_path / "bundle"
    run_entry("export.py", trained, f"checkpoint={out}", f"output_dir={bundle}", "calibration.num_samples=8",
              "progress=false", timeout=600)
    doc = json.loads((bundle / "bundle.json").read_text())
    assert doc["task"] == "detection" and doc["decode"]["input_size"] == [96, 128]
    assert doc["models"]["int8"]["outputs"] == ["cls_logits", "box_ltrb", "quality"]
    parity = doc["parity"]
    assert parity["passed"] and abs(parity["onnx_fp32"]["ap50"] - parity["torch"]["ap50"]) <= 0.002
    assert parity["onnx_int8"]["ap50_drop"] <= 0.01
    assert doc["calibration"]["by_source"]
    # the runtime CLI on the bundle: one JSON line per image with detections in original pixels
    res = tmp_path / "out.jsonl"
    proc = subprocess.run([PY, "-m", "vision.runtime", str(bundle), str(toy.parent / "src"), "--out", str(res),
                           "--precision", "int8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in res.read_text().splitlines()]
    assert len(lines) == 64
    assert sum(len(x["detections"]) for x in lines) > 0
    # an impossible int8 limit: the gate refuses and nothing is written
    bad = tmp_path / "refused"
    proc = run_entry("export.py", trained, f"checkpoint={out}", f"output_dir={bad}", "calibration.num_samples=8",
                     "parity.max_int8_drop=-1.0", "progress=false", check=False)
    assert proc.returncode != 0 and "parity gate failed" in proc.stderr
    assert not bad.exists()


@pytest.mark.parametrize("baseline", ["ssdlite", "fasterrcnn"])
def test_torchvision_baselines_train_through_the_same_recipe(baseline, toy, tmp_path):
    run_entry("train.py", tmp_path, "experiment=detection_synthetic", "~data.sources.synthetic",
              "+data.sources.toy._target_=vision.data.detection_sources.COCOSource",
              f"+data.sources.toy.annotations={toy / 'annotations.json'}", "+data.sources.toy.verify_checksums=false",
              f"model={baseline}", "data.preprocess.size=[96,128]", "data.batch_size=4", "data.steps_per_epoch=2",
              "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none", "run_name=b", timeout=600)
    run = json.loads((tmp_path / "outputs" / "b" / "run.json").read_text())
    assert 0.0 <= run["test"]["ap50"] <= 1.0 and run["test"]["num_gt"] > 0
    meta = torch.load(run["best_checkpoint"], map_location="cpu", weights_only=True)["vision"]
    assert meta["config"]["model"]["arch"].startswith(baseline[:4])
    proc = run_entry("export.py", tmp_path, f"checkpoint={tmp_path / 'outputs' / 'b'}", f"output_dir={tmp_path / 'x'}",
                     "progress=false", check=False)
    assert proc.returncode != 0 and "reference baseline" in proc.stderr


def test_scene_source_from_the_hydra_config(tmp_path):
    """The recipe's synthetic source instantiates from YAML (DictConfig/ListConfig values) and its
    parameters, including camera ranges, are plain and part of its cache key."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import vision.config  # noqa: F401

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=detection", f"paths.cache_dir={tmp_path}"])
    src = instantiate(cfg.data.sources.synthetic)
    assert src.params["camera_ranges"]["height"] == [2.5, 5.0]
    other = instantiate(cfg.data.sources.synthetic, camera_ranges={"height": [3.0, 9.0]})
    assert other.root != src.root and str(src.root).startswith(str(tmp_path))


def test_detection_demo_runs_end_to_end(tmp_path):
    """``python -m vision.demo detection`` with a tiny budget: train on scene-engine data, export through
    the gate, run the runtime on a rendered video with privacy and a zone; the annotated video exists."""
    # 8 one-frame scenes: whole scenes go to train / val / test (6 / 1 / 1)
    proc = subprocess.run([PY, "-m", "vision.demo", "detection", "data.sources.synthetic.scenes=8",
                           "data.sources.synthetic.frames=1", "trainer.max_epochs=1", "data.steps_per_epoch=2",
                           "data.preprocess.size=[96,96]", "model.width_mult=0.25", "trainer.enable_progress_bar=false",
                           f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "detection demo finished" in proc.stdout
    out = next((tmp_path / "outputs").glob("demo-det-*"))
    recs = [json.loads(x) for x in (out / "runtime_results.jsonl").read_text().splitlines()]
    assert len(recs) == 40 and all("zones" in r and "centre" in r["zones"] for r in recs)
    assert (out / "annotated_private.mp4").stat().st_size > 0
    assert json.loads((out / "runtime_timings.json").read_text())["fps"] > 0


def test_block_split_never_cuts_a_scene(tmp_path):
    """All cameras of a synthetic scene see the same people at the same time: a scene is never split."""
    from synthetic.detection_source import SceneDetectionSource

    syn = SceneDetectionSource(str(tmp_path / "cache"), scenes=4, cameras=2, frames=2, resolution=(160, 96),
                               progress=False)
    dm = _dm({"syn": syn}, split={"train": 0.45, "val": 0.3, "test": 0.25})
    dm.setup("fit")
    where = {}
    for split, items in dm.splits.items():
        for s in items:
            where.setdefault(s.meta["scene"], set()).add(split)
    assert all(len(v) == 1 for v in where.values()), where
    assert {next(iter(v)) for v in where.values()} == {"train", "val", "test"}


def test_mot17_conf_zero_entries_are_ignore_regions(tmp_path):
    seq = tmp_path / "seq"
    (seq / "img1").mkdir(parents=True)
    (seq / "gt").mkdir()
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(seq / "img1" / "000001.jpg")
    (seq / "gt" / "gt.txt").write_text("1,1,10,10,20,30,1,1,1.0\n1,2,40,10,20,30,0,1,1.0\n")
    (sample,) = MOTSource(str(seq), verify_checksums=False, label_map={"pedestrian": "person"}).load()
    flags = {b.identity: bool(b.attrs.get("ignore")) for b in sample.boxes}
    assert flags == {1: False, 2: True}


def test_unknown_label_on_an_ignore_region_is_an_error_too(toy, tmp_path):
    doc = json.loads((toy / "annotations.json").read_text())
    doc["categories"].append({"id": 99, "name": "crowd"})
    doc["annotations"][0].update(category_id=99, iscrowd=1)
    (tmp_path / "a.json").write_text(json.dumps(doc))
    dm = _dm({"toy": COCOSource(str(tmp_path / "a.json"), images_root=str(toy), verify_checksums=False)})
    with pytest.raises(DataError, match="unknown label 'crowd'"):
        dm.setup("fit")
