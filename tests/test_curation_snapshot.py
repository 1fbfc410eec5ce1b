"""Curation, part 3: Market-1501 and class-folder snapshots (round trip), MOT sequences as FiftyOne videos,
and training on a snapshot (``data=snapshot data.snapshot=NAME``: verified, split kept, id in MLflow), then
predicting with the trained checkpoint.

Real FiftyOne on a private MongoDB (``tests/curation_support.py``), real files, real ``train.py``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import curation_support
from conftest import make_tiny_folder, run_entry, shared
from curation_support import cli, json_out

mongo_uri, fo, dsname = curation_support.mongo_uri, curation_support.fo, curation_support.dsname


def test_market_round_trip_keeps_identity_camera_and_provenance(fo, dsname, tmp_path):
    from vision.curation.export import export_snapshot, read_manifest, verify_snapshot
    from vision.curation.load import get_dataset, load_source
    from vision.data.readers import ImageFolderSource
    from vision.data.reid import MarketSource

    market = shared("market1501_mini")
    assert load_source(dsname, market, "market", name="market", card="market1501_mini").added == 66
    ds = get_dataset(dsname)
    F = fo.ViewField
    moved = ds.match(F("role") == "train").first()
    old_name = Path(moved["relpath"]).name
    moved["identity"] = "0999"  # re-identified while reviewing
    moved.save()
    relabelled = ds.match(F("role") == "gallery").first()
    relabelled["classification"].label = "market:0998"  # or through the label
    relabelled.save()

    snap = export_snapshot(ds, "m1", tmp_path / "snaps", formats=["market", "classes"])
    verify_snapshot(snap)
    m = read_manifest(snap)
    assert m["counts"]["samples"] == 66 and m["counts"]["per_role"] == {"gallery": 20, "query": 20, "train": 26}
    assert m["label_schema"]["type"] == "reid" and "market:0999" in m["label_schema"]["classes"]
    orig = {Path(s.path).name: s for s in MarketSource(str(market), name="market", card="market1501_mini",
                                                       verify_checksums=False).load()}
    back = MarketSource(str(snap / "market"), name="market").load()
    assert len(back) == 66
    renamed = {}
    for b in back:
        o = orig.get(Path(b.path).name)
        if o is None:
            renamed[Path(b.path).name] = b
            continue
        assert (b.label, b.relpath, b.meta) == (o.label, o.relpath, o.meta)  # identity, camera, role, provenance
        assert Path(b.path).read_bytes() == Path(o.path).read_bytes()
    assert len(renamed) == 2
    new = renamed[old_name.replace(old_name[:4], "0999", 1)]
    assert (new.label, new.meta["identity"], new.meta["role"]) == ("market:0999", "0999", "train")
    o = orig[old_name]
    assert {k: v for k, v in new.meta.items() if k not in ("identity",)} == \
        {k: v for k, v in o.meta.items() if k not in ("identity",)}
    gal = next(b for b in renamed.values() if b is not new)
    assert (gal.label, gal.meta["role"]) == ("market:0998", "gallery")
    # the class-folder export of the same view reads back with every sample's meta
    folders = ImageFolderSource(str(snap / "classes")).load()
    assert len(folders) == 66 and {s.label for s in folders} == set(m["label_schema"]["classes"])
    f = next(s for s in folders if s.label == "market:0999")
    assert f.meta["camera"] == o.meta["camera"] and f.meta["licence"] == o.meta["licence"]


def test_mot_sequence_as_video(fo, dsname, tmp_path):
    from vision.curation.export import export_snapshot
    from vision.curation.load import get_dataset, to_detection_samples
    from vision.data.detection import read_coco, read_mot

    tud = shared("tud_campus")
    name = f"{dsname}-video"
    out = json_out(cli(tmp_path, "action=load", f"dataset={name}", f"source.path={tud}", "source.as_video=true",
                       "source.frames_glob='img1/0000[0-2]?.jpg'", "source.card=tud_campus", "source.split=test"))
    assert (out["format"], out["added"], out["read"]) == ("mot-video", 1, 29)  # frames 1..29
    assert set(out["problems_by_code"]) == {"frame_not_selected"}  # gt lines of the frames left out
    ds = get_dataset(name)
    assert ds.media_type == "video" and len(ds) == 1
    s = ds.first()
    assert Path(s.filepath) == tmp_path / "videos" / "tud_campus.mp4" and s.filepath.endswith(".mp4")
    assert (s.metadata.total_frame_count, s.metadata.frame_width, s.metadata.frame_height) == (29, 640, 480)
    assert (s["licence"].startswith("CC BY-NC-SA"), s["split"], s["kind"]) == (True, "test", "real")
    orig = list(read_mot(tud, "img1/0000[0-2]?.jpg", source="tud_campus", policy="skip"))
    assert ds.count("frames") == 29 and ds.count("frames.ground_truth.detections") == sum(len(o.boxes) for o in orig)
    assert s.frames[1]["mot_frame"] == 1 and s.frames[29]["mot_frame"] == 29
    import cv2

    cap = cv2.VideoCapture(s.filepath)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 29
    cap.release()
    back = to_detection_samples(ds)
    assert [b.key for b in back] == [o.key for o in orig]
    assert [[(x.xyxy, x.label, x.identity, x.attrs) for x in b.boxes] for b in back] == \
        [[(x.xyxy, x.label, x.identity, x.attrs) for x in o.boxes] for o in orig]
    again = json_out(cli(tmp_path, "action=load", f"dataset={name}", f"source.path={tud}", "source.as_video=true",
                         "source.frames_glob='img1/0000[0-2]?.jpg'"))
    assert (again["added"], again["existing"]) == (0, 1)
    mixed = cli(tmp_path, "action=load", f"dataset={name}", f"source.path={shared('market1501_mini')}")
    assert mixed.returncode != 0
    snap = export_snapshot(ds, "tud", tmp_path / "snaps")  # the frames, as COCO images
    coco = read_coco(snap / "coco" / "annotations.json")
    assert len(coco) == 29 and [len(c.boxes) for c in coco] == [len(o.boxes) for o in orig]


def test_train_on_snapshot_then_predict_with_the_checkpoint(fo, dsname, tmp_path):
    import mlflow

    from synthetic.detection_source import SceneDetectionSource
    from vision.curation.load import get_dataset, load_source

    syn = SceneDetectionSource(str(tmp_path / "cache"), scenes=3, cameras=1, frames=4, resolution=(160, 96),
                               progress=False)
    load_source(dsname, syn.ensure(), "scene", name="syn")
    ds = get_dataset(dsname)
    keys = sorted(ds.values("key"))
    ds.set_values("split", {k: "train" if i < 8 else "val" if i < 10 else "test" for i, k in enumerate(keys)},
                  key_field="key")
    snap = json_out(cli(tmp_path, "action=export-snapshot", f"dataset={dsname}", "snapshot.name=v1",
                        "snapshot.note=curated for the recipe test"))
    sid = snap["snapshot_id"]
    tiny = ["data.preprocess.size=[96,128]", "model.width_mult=0.25", "data.batch_size=4", "data.steps_per_epoch=2",
            "data.augment=[]", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    run_entry("train.py", tmp_path, "experiment=detection", "data=snapshot", "data.snapshot=v1", *tiny, "run_name=s1",
              timeout=600)
    out = tmp_path / "outputs" / "s1"
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 2, "test": 2}  # the snapshot's own split
    run = json.loads((out / "run.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    r = client.get_run(run["mlflow"]["run_id"])
    assert r.data.tags["data.sources"] == "v1" and r.data.params["data.snapshot"] == "v1"
    assert (r.data.tags["data.snapshot"], r.data.tags["data.snapshot_id"]) == ("v1", sid)
    card_file = client.download_artifacts(r.info.run_id, "data/cards/v1.yaml", str(tmp_path / "dl"))
    import yaml

    card = yaml.safe_load(Path(card_file).read_text())
    assert (card["snapshot"], card["snapshot_id"], card["dataset"], card["verified"]) == ("v1", sid, dsname, True)

    # the checkpoint's predictions, stored and evaluated in the dataset
    res = json_out(cli(tmp_path, "action=predict", f"dataset={dsname}", f"predict.model={out}",
                       "predict.field=ckpt_pred", "predict.splits=[test]", "predict.score_threshold=0.01"))
    assert (res["predict"]["kind"], res["predict"]["task"], res["predict"]["samples"]) == ("checkpoint", "detection", 2)
    assert res["predict"]["model"].endswith(".ckpt") and len(res["predict"]["sha256"]) == 64
    ds.reload()
    assert ds.exists("ckpt_pred").count() == 2 and "eval" in ds.list_evaluations()
    assert res["evaluation"]["samples"] == 2 and res["evaluation"]["tp"] + res["evaluation"]["fn"] == sum(
        len(b or []) for b in ds.match(fo.ViewField("split") == "test").values("ground_truth.detections"))

    # a modified snapshot is refused, naming the file
    ann = tmp_path / "snapshots" / "v1" / "coco" / "annotations.json"
    ann.chmod(0o644)
    ann.write_text(ann.read_text().replace('"person"', '"persn"', 1))
    proc = run_entry("train.py", tmp_path, "experiment=detection", "data=snapshot", "data.snapshot=v1", *tiny,
                     "run_name=s2", check=False, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "annotations.json: sha256 differs" in proc.stderr and "refusing to train on a modified snapshot" in \
        proc.stderr
    missing = run_entry("train.py", tmp_path, "experiment=detection", "data=snapshot", "data.snapshot=v9", *tiny,
                        "run_name=s3", check=False, timeout=600)
    assert missing.returncode == 2 and "snapshot 'v9' not found" in missing.stderr and "v1" in missing.stderr


def test_classification_snapshot_datamodule_keeps_the_curated_split(fo, dsname, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from conftest import REPO
    from vision.curation.export import export_snapshot
    from vision.curation.load import get_dataset, load_source
    from vision.errors import DataError

    folder = make_tiny_folder(tmp_path / "tiny", per_class=4, size=24)
    load_source(dsname, folder, "image_folder", name="tiny", licence="CC0")
    ds = get_dataset(dsname)
    keys = sorted(ds.values("key"))
    ds.set_values("split", {k: ["train", "train", "val", "test"][i % 4] for i, k in enumerate(keys)}, key_field="key")
    export_snapshot(ds, "c1", tmp_path / "snapshots", formats=["classes"])
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=snapshot_classification", "data.snapshot=c1",
                                          f"data.snapshots_root={tmp_path / 'snapshots'}"])
    dm = instantiate(cfg.data)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 6, "val": 3, "test": 3}
    assert dm.labels == ["blobs", "flat", "stripes"] and all(s.meta["licence"] == "CC0" for s in dm.splits["train"])
    card = dm.cards[0]
    assert (card["snapshot"], card["licence"], card["task"]) == ("c1", "CC0", "classification")
    assert dm.summary()["snapshot"]["snapshot_id"] == card["snapshot_id"]
    img = next((tmp_path / "snapshots" / "c1" / "classes" / "flat").iterdir())
    os.chmod(img, 0o644)
    img.write_bytes(b"changed")
    with pytest.raises(DataError, match=f"{img.name}: sha256 differs"):
        instantiate(cfg.data).setup()
    shutil.rmtree(tmp_path / "snapshots" / "c1" / "classes" / "flat")  # even a deleted folder is noticed
    with pytest.raises(DataError, match="missing"):
        instantiate(cfg.data).setup()
