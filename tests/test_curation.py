"""Curation in FiftyOne (``vision.curation``): load, round trips, duplicates / leaks, snapshots, CLI, concurrency.

Every test talks to a throwaway MongoDB started once per test process (``database_uri``, see
``tests/curation_support.py``), so nothing touches the user's FiftyOne database and no ``--51-service db``
process is left for ``test_fiftyone_db`` to trip over.
Dataset names are unique per test and the datasets are deleted afterwards.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import curation_support
from conftest import REPO, make_tiny_folder, shared
from curation_support import image
from vision.data.boxes import Box, DetectionSample
from vision.data.detection import read_coco, read_voc, read_yolo, write_coco, write_voc, write_yolo

PY = sys.executable


# -- a private MongoDB (tests/curation_support.py) ------------------------------------------------------
mongo_uri, fo, dsname = curation_support.mongo_uri, curation_support.fo, curation_support.dsname


# -- helpers ------------------------------------------------------------------------------------------
def _image(path: Path, size: tuple[int, int], seed: int) -> str:
    return image(path, size, seed)


def _awkward_samples(root: Path) -> list[DetectionSample]:
    """Boxes with non-representable decimals, identities, attrs (incl. names that clash with FiftyOne's)."""
    params = {"time_of_day": "dusk", "rain": False, "exposure": 0.731, "lights": [1, 2, 3],
              "camera": {"height": 4.25, "tilt": -12.5}}
    samples = []
    for i in range(4):
        W, H = 160 + 8 * i, 96 + 4 * i
        rel = f"cam{i % 2}/frame_{i:03d}.png"
        path = _image(root / rel, (W, H), i)
        boxes = [
            Box(10.1 + i, 20.2, 40.30000000000001 + i, 70.7, "person", 7 + i,
                {"visible_fraction": 0.1 + 0.2, "amodal_bbox": [9.9, 20.2, 31.3, 50.5], "camera": i % 2,
                 "confidence": 0.25, "index": 99, "occluded": True, "note": "bike rack"}),
            Box(0.0, 0.0, float(W), float(H) / 3, "car", None, {"iscrowd": 1}),
            Box(1 / 3, 2 / 3, 5 / 3 + 50, 7 / 3 + 20, "person", 3, {}),
        ]
        meta = {"generator": "synthetic.scene", "generator_version": "1.2", "params": params, "scene": i // 2,
                "scene_seed": 1000 + i, "condition": "dusk", "camera": i % 2, "frame": i, "licence": "generated",
                "kind": "synthetic"}
        samples.append(DetectionSample(os.path.abspath(path), W, H, boxes, "syn", rel, meta))
    return samples


def _attrs(samples):
    return [[(b.xyxy, b.label, b.identity, b.attrs) for b in s.boxes] for s in samples]


def _edit_first_label(fo, name: str, key: str, new_label: str) -> None:
    ds = fo.load_dataset(name)
    sample = ds.one(fo.ViewField("key") == key)
    sample["ground_truth"].detections[0].label = new_label
    sample.save()


# -- load ---------------------------------------------------------------------------------------------
def test_coco_round_trip_keeps_everything(fo, dsname, tmp_path):
    from vision.curation.export import MANIFEST, export_snapshot, read_manifest, verify_snapshot
    from vision.curation.load import get_dataset, load_source
    from vision.errors import DataError

    src = _awkward_samples(tmp_path / "src")
    coco = write_coco(src, tmp_path / "coco", ["person", "car"], images="none")
    orig = read_coco(coco)
    assert _attrs(orig) == _attrs(src) and [s.meta for s in orig] == [s.meta for s in src]

    rep = load_source(dsname, coco, name="syn")
    assert (rep.read, rep.added, rep.existing, rep.boxes, rep.problems) == (4, 4, 0, 12, [])
    again = load_source(dsname, coco, name="syn")
    assert (again.added, again.existing) == (0, 4)  # idempotent by key
    ds = get_dataset(dsname)
    assert len(ds) == 4 and ds.default_classes == ["person", "car"]

    s0 = ds.one(fo.ViewField("key") == "syn:cam0/frame_000.png")
    assert (s0["source"], s0["kind"], s0["licence"], s0["camera"], s0["frame"]) == \
        ("syn", "synthetic", "generated", "0", 0)
    assert s0["provenance"]["params"]["camera"] == {"height": 4.25, "tilt": -12.5}
    d = s0["ground_truth"].detections[0]
    assert d.bounding_box == [10.1 / 160, 20.2 / 96, (40.30000000000001 - 10.1) / 160, (70.7 - 20.2) / 96]
    assert d["bbox_px"] == [10.1, 20.2, 40.30000000000001, 70.7]
    assert (d.label, d["identity"], d.index, d["attr_confidence"], d["attr_index"], d["note"]) == \
        ("person", 7, 7, 0.25, 99, "bike rack")
    assert d.confidence is None

    # edit one label (and move one box in "the App"), then export
    _edit_first_label(fo, dsname, "syn:cam1/frame_001.png", "cyclist")
    s2 = ds.one(fo.ViewField("key") == "syn:cam0/frame_002.png")
    moved = s2["ground_truth"].detections[1]
    moved.bounding_box = [0.25, 0.5, 0.5, 0.25]
    s2.save()
    snap = export_snapshot(ds.sort_by("frame"), "v1", tmp_path / "snapshots", classes=["person", "car", "cyclist"])
    back = read_coco(snap / "coco" / "annotations.json", source="syn")
    assert [s.relpath for s in back] == [f"images/syn/{s.relpath}" for s in orig]
    assert [s.meta for s in back] == [s.meta for s in orig]
    assert [(s.width, s.height) for s in back] == [(s.width, s.height) for s in orig]
    want = _attrs(orig)
    got = _attrs(back)
    assert got[1][0][1] == "cyclist"
    got[1][0] = (got[1][0][0], "person", *got[1][0][2:])
    W, H = orig[2].width, orig[2].height
    assert got[2][1][0] == (0.25 * W, 0.5 * H, 0.25 * W + 0.5 * W, 0.5 * H + 0.25 * H)
    got[2][1] = want[2][1]
    assert got == want  # every other box bit-exact, every label, identity and attribute

    m = read_manifest(snap)
    assert m["counts"]["samples"] == 4 and m["counts"]["boxes"] == 12
    assert m["counts"]["per_class"] == {"car": 4, "cyclist": 1, "person": 7}
    assert m["counts"]["per_source"] == {"syn": {"boxes": 12, "samples": 4}}
    assert m["label_schema"]["classes"] == ["person", "car", "cyclist"]
    assert "visible_fraction" in m["label_schema"]["box_attributes"]
    assert m["view"]["dataset"] == dsname and m["view"]["stages"][0]["_cls"].endswith("SortBy")
    assert m["parent"] is None and m["created_at"] and len(m["sample_keys"]) == 4
    assert set(m["files"]) == {"coco/annotations.json", *(f"coco/images/syn/{s.relpath}" for s in orig)}
    assert verify_snapshot(snap)["snapshot_id"] == m["snapshot_id"]
    with pytest.raises(FileExistsError):
        export_snapshot(ds, "v1", tmp_path / "snapshots")
    child = export_snapshot(ds.match_tags("nothing", bool=False), "v2", tmp_path / "snapshots", parent="v1",
                            classes=["person", "car", "cyclist"])
    assert read_manifest(child)["parent"] == {"name": "v1", "snapshot_id": m["snapshot_id"]}
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "snapshots").iterdir())
    ann = snap / "coco" / "annotations.json"
    assert not os.access(ann, os.W_OK) or os.geteuid() == 0  # read-only (root ignores modes)
    ann.chmod(0o644)
    ann.write_text(ann.read_text().replace("cyclist", "cyclisT"))
    with pytest.raises(DataError, match="annotations.json: sha256 differs"):
        verify_snapshot(snap)
    assert (snap / MANIFEST).is_file()


def test_yolo_and_voc_round_trip(fo, dsname, tmp_path):
    from vision.curation.export import export_snapshot
    from vision.curation.load import get_dataset, load_source, to_detection_samples

    src = []
    for i in range(3):
        W, H = 200, 120
        path = _image(tmp_path / "raw" / f"img_{i}.png", (W, H), 10 + i)
        src.append(DetectionSample(path, W, H, [
            Box(4.0 + i, 5.0, 60.0, 70.0 + i, "crazing", None, {"difficult": 0, "truncated": 1, "pose": "Left"}),
            Box(99.0, 10.0, 150.0, 119.0, "scratches", None, {"difficult": 1, "occluded": 0}),
        ], "raw", f"img_{i}.png", {}))
    write_yolo(src, tmp_path / "yolo", ["crazing", "scratches"])
    write_voc(src, tmp_path / "voc")
    yolo = read_yolo(tmp_path / "yolo", ["crazing", "scratches"], source="y")
    voc = read_voc(tmp_path / "voc" / "images", tmp_path / "voc" / "annotations", source="v")

    assert load_source(dsname, tmp_path / "yolo", "yolo", name="y").added == 3  # classes from classes.txt
    assert load_source(dsname, tmp_path / "voc", "voc", name="v").added == 3
    _edit_first_label(fo, dsname, "y:images/img_1.png", "scratches")
    _edit_first_label(fo, dsname, "v:img_2.png", "scratches")
    ds = get_dataset(dsname)
    classes = ["crazing", "scratches"]
    snap_y = export_snapshot(ds.match(fo.ViewField("source") == "y"), "y1", tmp_path / "snaps", formats=["yolo"],
                             classes=classes)
    snap_v = export_snapshot(ds.match(fo.ViewField("source") == "v"), "v1", tmp_path / "snaps", formats=["voc"],
                             classes=classes)
    back_y = read_yolo(snap_y / "yolo", classes, source="y")
    back_v = read_voc(snap_v / "voc" / "images", snap_v / "voc" / "annotations", source="v")

    in_fo = {src_name: to_detection_samples(ds.match(fo.ViewField("source") == src_name))
             for src_name in ("y", "v")}
    for orig, back, edited, exact in ((yolo, back_y, 1, False), (voc, back_v, 2, True),
                                      (yolo, in_fo["y"], 1, True), (voc, in_fo["v"], 2, True)):
        want, got = _attrs(orig), _attrs(back)
        assert [s.relpath for s in back] == [s.relpath for s in orig]
        assert [s.meta for s in back] == [s.meta for s in orig]
        assert got[edited][0][1] == "scratches"
        got[edited][0] = (got[edited][0][0], "crazing", *got[edited][0][2:])
        if exact:
            assert got == want  # bit-exact boxes, every label and attribute
        else:  # YOLO files hold normalized centres/sizes: exact to ~1e-12 px (vision.data.detection)
            assert [[(lab, ident, at) for _, lab, ident, at in r] for r in got] == \
                [[(lab, ident, at) for _, lab, ident, at in r] for r in want]
            assert np.allclose([b[0] for r in got for b in r], [b[0] for r in want for b in r], rtol=0, atol=1e-9)

    # re-loading with on_existing=update replaces the curated fields with the source's (no duplicates)
    rep = load_source(dsname, tmp_path / "voc", "voc", name="v", on_existing="update")
    assert (rep.added, rep.updated, rep.existing) == (0, 3, 0) and len(ds) == 6
    assert _attrs(to_detection_samples(ds.match(fo.ViewField("source") == "v"))) == _attrs(voc)


def test_load_real_synthetic_folders_and_reid(fo, dsname, tmp_path):
    from synthetic.detection_source import SceneDetectionSource
    from vision.curation.load import get_dataset, load_samples, load_source

    pets = shared("pets2009_s3mf1")
    rep = load_source(dsname, pets, frames_glob="img/frame_000[1-5].jpg", card="pets2009_s3mf1", split="train")
    assert rep.added == 5 and rep.problems and {p["code"] for p in rep.problems} == {"frame_not_selected"}
    syn = SceneDetectionSource(str(tmp_path / "cache"), scenes=1, cameras=1, frames=2, resolution=(160, 96),
                               progress=False)
    load_source(dsname, syn.ensure(), "scene", name="syn")
    make_tiny_folder(tmp_path / "tiny", per_class=2, size=24)
    (tmp_path / "tiny" / "flat" / "broken.png").write_bytes(b"not a png")
    rep_f = load_source(dsname, tmp_path / "tiny", "image_folder", licence="CC0", kind="refined")
    assert rep_f.added == 6
    assert [(p["code"], Path(p["where"]).name) for p in rep_f.problems] == [("unreadable_image", "broken.png")]
    market = shared("market1501_mini")
    rep_m = load_source(dsname, market, "auto", name="market", card="market1501_mini")
    assert rep_m.format == "market" and rep_m.added > 0
    # a sample whose file vanished is reported, not dropped silently
    gone = DetectionSample(str(tmp_path / "gone.png"), 10, 10, [], "extra", "gone.png", {})
    rep_g = load_samples(dsname, [gone], source_name="extra")
    assert rep_g.added == 0 and rep_g.problems[0]["code"] == "missing_image"

    ds = get_dataset(dsname)
    F = fo.ViewField
    p1 = ds.one(F("key") == "pets2009_s3mf1:img/frame_0001.jpg")
    assert (p1["kind"], p1["split"], p1["frame"], p1["licence"].startswith("research use")) == ("real", "train", 1, True)
    assert p1["ground_truth"].detections[0]["identity"] == 1
    s = ds.match(F("source") == "syn").first()
    assert s["kind"] == "synthetic" and s["licence"] == "generated"
    assert s["provenance"]["generator"] == "synthetic.scene" and isinstance(s["provenance"]["params"], dict)
    assert s["condition"] and s["camera"] is not None
    f = ds.match(F("source") == "tiny").first()
    assert (f["kind"], f["licence"], f["classification"].label) == ("refined", "CC0", "blobs")
    m = ds.match(F("source") == "market").first()
    assert m["licence"].startswith("research only") and m["identity"] and m["camera"] and m["role"]
    assert m["classification"].label == f"market:{m['identity']}"
    reports = ds.info["load_reports"]
    assert len(reports) == 5 and reports[-1]["problems"][0]["code"] == "missing_image"


# -- brain --------------------------------------------------------------------------------------------
def test_duplicates_leaks_and_uniqueness(fo, dsname, tmp_path):
    from vision.curation.actions import summary
    from vision.curation.brain import find_duplicates
    from vision.curation.load import get_dataset, load_source

    pets = shared("pets2009_s3mf1")
    tud = shared("tud_campus")
    load_source(dsname, pets, frames_glob="img/frame_000[1-9].jpg", split="train")
    load_source(dsname, pets, frames_glob="img/frame_001[0-9].jpg", split="test")  # consecutive frames: a leak
    load_source(dsname, tud, frames_glob="img1/00000[1-4].jpg", split="train")
    folder = make_tiny_folder(tmp_path / "tiny", per_class=3, size=32)
    shutil.copy(folder / "blobs" / "blobs_000.png", folder / "flat" / "copy_of_blob.png")  # planted exact dup
    load_source(dsname, folder, "image_folder", split="val")
    ds = get_dataset(dsname)

    s = find_duplicates(ds, "dedup")
    F = fo.ViewField
    assert s["analysed"] == len(ds) == 19 + 4 + 10
    assert s["exact_groups"] == [["tiny:blobs/blobs_000.png", "tiny:flat/copy_of_blob.png"]]
    pets_keys = {f"pets2009_s3mf1:img/frame_{i:04d}.jpg" for i in range(1, 20)}
    tud_keys = {f"tud_campus:img1/{i:06d}.jpg" for i in range(1, 5)}
    groups = [set(g) for g in s["near_groups"]]
    assert pets_keys in groups and tud_keys in groups  # video frames of one camera are near duplicates
    assert not any(g & pets_keys and g & tud_keys for g in groups)
    assert s["leaks"] > 0 and all(set(p["splits"]) == {"train", "test"} for p in s["leak_pairs"])
    assert {p["a"] for p in s["leak_pairs"]} | {p["b"] for p in s["leak_pairs"]} == pets_keys
    assert ds.count_values("dedup_leak") == {True: 19, False: 14}
    f9 = ds.one(F("key") == "pets2009_s3mf1:img/frame_0009.jpg")
    assert "pets2009_s3mf1:img/frame_0010.jpg" in f9["dedup_near_dups"] and f9["dedup_leak_splits"] == ["test", "train"]
    dup = ds.one(F("key") == "tiny:flat/copy_of_blob.png")
    assert dup["dedup_exact_group"] == 0 and not dup["dedup_leak"]
    u = ds.values("dedup_uniqueness")
    assert all(0.0 <= x <= 1.0 for x in u) and max(u) == 1.0
    tiny_u = dict(zip(*ds.match(F("source") == "tiny").values(["key", "dedup_uniqueness"])))
    assert set(sorted(tiny_u, key=tiny_u.get)[:2]) == {"tiny:flat/copy_of_blob.png", "tiny:blobs/blobs_000.png"}
    assert "dedup" in ds.list_brain_runs()
    near = ds.sort_by_similarity(f9.id, k=3, brain_key="dedup")
    assert set(near.values("key")) <= pets_keys
    info = summary(dsname)
    assert info["brain"]["dedup"]["leaks"] == s["leaks"] and info["per_split"] == {"test": 10, "train": 13, "val": 10}


# -- CLI ----------------------------------------------------------------------------------------------
def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([PY, "-m", "vision.curate", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def _json_out(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_cli_load_dedup_export_summary(fo, dsname, tmp_path):
    src = _awkward_samples(tmp_path / "src")
    coco = write_coco(src, tmp_path / "coco", ["person", "car"], images="none")

    bad = _cli(tmp_path, "action=load", f"dataset={dsname}", f"source.path={tmp_path / 'nope'}")
    assert bad.returncode == 2 and "nope: source path not found" in bad.stderr
    unknown = _cli(tmp_path, "action=summary", "dataset=no-such-dataset-xyz")
    assert unknown.returncode == 2 and "unknown FiftyOne dataset 'no-such-dataset-xyz'" in unknown.stderr
    assert "Traceback" not in bad.stderr + unknown.stderr

    loaded = _json_out(_cli(tmp_path, "action=load", f"dataset={dsname}", f"source.path={coco}", "source.name=syn",
                            "source.split=train"))
    assert (loaded["format"], loaded["added"], loaded["boxes"]) == ("coco", 4, 12)
    dd = _json_out(_cli(tmp_path, "action=dedup", f"dataset={dsname}"))
    assert dd["analysed"] == 4 and dd["leaks"] == 0
    fo.load_dataset(dsname).take(2, seed=0).tag_samples("reviewed")
    snap = _json_out(_cli(tmp_path, "action=export-snapshot", f"dataset={dsname}", "snapshot.name=s1",
                          "snapshot.tags=[reviewed]", "snapshot.formats=[coco,yolo,voc]"))
    assert snap["counts"]["samples"] == 2 and Path(snap["snapshot"]) == tmp_path / "snapshots" / "s1"
    assert (tmp_path / "snapshots" / "s1" / "yolo" / "classes.txt").is_file()
    again = _cli(tmp_path, "action=export-snapshot", f"dataset={dsname}", "snapshot.name=s1")
    assert again.returncode != 0 and "already exists" in again.stderr
    summ = _json_out(_cli(tmp_path, "action=summary", f"dataset={dsname}"))
    assert summ["samples"] == 4 and summ["boxes_per_class"] == {"car": 4, "person": 8}
    assert summ["snapshots"][0]["name"] == "s1" and summ["brain"]["dedup"]["analysed"] == 4


# -- concurrency --------------------------------------------------------------------------------------
EDITOR = r"""
import json, sys, time
from pathlib import Path
from vision.curation.db import import_fiftyone
fo = import_fiftyone()
fo.config.database_validation = False
name, me, keys, barrier = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
ds = fo.load_dataset(name)
(barrier / me).touch()
deadline = time.time() + 120
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.05)
F = fo.ViewField
for rnd in range(3):
    for k in keys:
        s = ds.one(F("key") == k)
        s["ground_truth"].detections[0].label = f"{me}-{rnd}"
        s.tags.append(f"{me}-r{rnd}")
        s["reviewed_by"] = me
        s.save()
    ds.select_by("key", keys).tag_samples(f"bulk-{me}")
    ds.set_values("review_round", {k: rnd for k in keys}, key_field="key")
print("done", me)
"""


def test_two_processes_editing_different_samples_lose_nothing(fo, dsname, tmp_path):
    from vision.curation.load import get_dataset, load_source

    src = []
    for i in range(12):
        path = _image(tmp_path / "img" / f"f{i:02d}.png", (32, 24), i)
        src.append(DetectionSample(path, 32, 24, [Box(1.0, 2.0, 10.0, 20.0, "person", i, {})], "c",
                                   f"f{i:02d}.png", {}))
    coco = write_coco(src, tmp_path / "coco", ["person"], images="none")
    load_source(dsname, coco, name="c")
    ds = get_dataset(dsname)
    ds.add_sample_field("reviewed_by", fo.core.fields.StringField)
    ds.add_sample_field("review_round", fo.core.fields.IntField)
    keys = sorted(ds.values("key"))
    halves = {"a": keys[0::2], "b": keys[1::2]}
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([PY, "-c", EDITOR, dsname, me, json.dumps(ks), str(barrier)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me, ks in halves.items()]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    ds.reload()
    for me, ks in halves.items():
        for k in ks:
            s = ds.one(fo.ViewField("key") == k)
            assert s["ground_truth"].detections[0].label == f"{me}-2", k
            assert s["reviewed_by"] == me and s["review_round"] == 2
            assert {f"{me}-r0", f"{me}-r1", f"{me}-r2", f"bulk-{me}"} <= set(s.tags), (k, s.tags)
    assert len(ds) == 12
