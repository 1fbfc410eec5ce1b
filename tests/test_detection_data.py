"""Detection data layer: readers/writers (COCO, YOLO, VOC, MOT) on real and broken data, box utilities,
and box-aware augmentation (property-tested)."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from conftest import shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vision.data.boxes import Box, DetectionSample, clip_and_filter, validate_boxes
from vision.data.detection import (
    apply_detection_augment,
    build_detection_augment,
    read_coco,
    read_mot,
    read_voc,
    read_yolo,
    write_coco,
    write_mot,
    write_voc,
    write_yolo,
)
from vision.errors import DataError


# -- helpers --------------------------------------------------------------------------------------
def _img(path: Path, w: int = 64, h: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def _same(a, b) -> None:
    """Same images (by file name), sizes and boxes, exactly (geometry, label, identity, and attrs)."""
    assert len(a) == len(b)
    for sa, sb in zip(a, b):
        assert (sa.width, sa.height) == (sb.width, sb.height)
        assert sa.boxes == sb.boxes, sa.key
        assert [x.attrs for x in sa.boxes] == [x.attrs for x in sb.boxes], sa.key


def _mot_rows(path: Path) -> list[tuple[float, ...]]:
    return sorted(tuple(float(t) for t in line.split(",")) for line in path.read_text().splitlines() if line.strip())


# -- real MOT data: counts from the READMEs --------------------------------------------------------
def test_pets_gt_matches_readme():
    seq = shared("pets2009_s3mf1")
    r = read_mot(seq)
    assert len(r) == 107 and r.num_boxes == 620
    per_id = Counter(b.identity for s in r for b in s.boxes)
    assert sorted(per_id) == list(range(1, 8))
    assert [per_id[i] for i in range(1, 8)] == [107, 103, 98, 90, 77, 72, 73]
    assert all(s.boxes for s in r) and {(s.width, s.height) for s in r} == {(768, 576)}
    assert r.info["columns"] == 10 and r.info["identities"] == 7
    assert [s.meta["frame"] for s in r] == list(range(1, 108))
    assert r[0].key == "pets2009_s3mf1:img/frame_0001.jpg"
    assert all(validate_boxes(s, s.key, labels={"person"}, tol=0.0) == [] for s in r)
    # 4 boxes overshoot the right edge by < 0.1 px: clipped by default, original kept
    assert len(r.clipped) == 4
    clipped = [b for s in r for b in s.boxes if "amodal_bbox" in b.attrs]
    assert len(clipped) == 4 and all(b.x2 == 768.0 for b in clipped)
    b = r[0].boxes[0]
    assert (b.x1, b.y1) == (682.07, 285.96) and b.attrs["world_x"] == -11773.0
    # without clipping they are within the 0.5 px tolerance: same counts, nothing clipped
    r2 = read_mot(seq, clip_outside=False)
    assert r2.num_boxes == 620 and not r2.clipped


def test_tud_gt_matches_readme_and_clip_policy(tmp_path):
    seq = shared("tud_campus")
    r = read_mot(seq)
    assert len(r) == 71 and r.num_boxes == 359
    assert len({b.identity for s in r for b in s.boxes}) == 8 and all(s.boxes for s in r)
    assert r.info["columns"] == 7 and {(s.width, s.height) for s in r} == {(640, 480)}
    assert all(validate_boxes(s, s.key, tol=0.0) == [] for s in r)
    assert len(r.clipped) == 19  # people entering/leaving the view, up to ~41 % outside
    b = next(b for s in r if s.meta["frame"] == 24 for b in s.boxes if b.identity == 7)
    assert b.attrs["amodal_bbox"] == [-28.0, 183.0, 76.0, 235.0] and (b.x1, b.x2) == (0.0, 48.0)
    # strict: each box partly outside is an error naming gt.txt and its line
    with pytest.raises(DataError) as e:
        read_mot(seq, clip_outside=False)
    msg = str(e.value)
    assert msg.startswith("19 problem(s)") and f"{seq / 'gt' / 'gt.txt'}:115:" in msg and "outside" in msg
    # skip: 340 boxes kept, 19 listed with their reason, report file written
    rep = tmp_path / "skip.json"
    s = read_mot(seq, clip_outside=False, policy="skip", report=rep)
    assert s.num_boxes == 340 and len(s.skipped) == 19 and {i.code for i in s.skipped} == {"outside_image"}
    data = json.loads(rep.read_text())
    assert data["skipped_count"] == 19 and data["skipped_by_reason"] == {"outside_image": 19}
    assert all("gt.txt:" in i["where"] for i in data["skipped"])
    with pytest.raises(FileExistsError):
        read_mot(seq, clip_outside=False, policy="skip", report=rep)


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pets2009_s3mf1", "tud_campus"])
def test_mot_round_trip_is_exact(tmp_path, name):
    seq = shared(name)
    a = read_mot(seq)
    out = write_mot(a, tmp_path / name, images="symlink")
    b = read_mot(out)
    _same(a, b)
    assert [s.meta["frame"] for s in a] == [s.meta["frame"] for s in b]
    # the written gt holds the very same numbers as the source (amodal boxes included)
    assert _mot_rows(out / "gt" / "gt.txt") == _mot_rows(seq / "gt" / "gt.txt")
    with pytest.raises(FileExistsError):
        write_mot(a, out, images="symlink")


def test_coco_round_trip_is_exact_and_pycocotools_reads_it(tmp_path):
    seq = shared("pets2009_s3mf1")
    tud = shared("tud_campus")
    a = read_mot(seq, meta={"licence": "research", "camera": "View_001"})
    js = write_coco(a, tmp_path / "coco1", ["person"], images="none")
    b = read_coco(js, source=a.source)
    _same(a, b)
    assert [s.key for s in a] == [s.key for s in b] and [s.meta for s in a] == [s.meta for s in b]
    assert [s.path for s in a] == [s.path for s in b]
    c = read_coco(write_coco(b, tmp_path / "coco2", ["person"], images="symlink"))
    _same(b, c)
    # TUD (clipped boxes: visible box in bbox, amodal_bbox kept as an extra field) with copied images
    t = read_mot(tud)
    tc = read_coco(write_coco(t, tmp_path / "coco3", ["person"]))
    _same(t, tc)
    assert sum("amodal_bbox" in x.attrs for s in tc for x in s.boxes) == 19
    import contextlib
    import io

    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(js))
    assert len(api.getAnnIds()) == 620 and len(api.getImgIds()) == 107
    with pytest.raises(FileExistsError):
        write_coco(a, tmp_path / "coco1", ["person"], images="none")


def test_yolo_round_trip(tmp_path):
    seq = shared("tud_campus")
    neu = shared("neu_det")
    a = read_mot(seq)
    b = read_yolo(write_yolo(a, tmp_path / "y", ["person"], images="symlink"), ["person"])
    assert len(a) == len(b) and b.num_boxes == 359 and not b.clipped
    for sa, sb in zip(a, b):
        assert Path(sa.path).name == Path(sb.path).name and (sa.width, sa.height) == (sb.width, sb.height)
        xa, xb = sa.boxes_array(), sb.boxes_array()
        np.testing.assert_allclose(xb, xa, rtol=1e-6, atol=1e-9 * sa.width)
        assert np.abs(xb - xa).max() < 1e-9
        assert [x.label for x in sa.boxes] == [x.label for x in sb.boxes]
    # multi-class NEU-DET images (VOC) -> YOLO -> back
    v = read_voc(neu / "IMAGES", _neu_subset(neu, tmp_path / "ann"), missing_annotation="ignore")
    classes = sorted({x.label for s in v for x in s.boxes})
    y = read_yolo(write_yolo(v, tmp_path / "y2", classes, images="symlink"), classes)
    for sa, sb in zip(v, y):
        np.testing.assert_allclose(sb.boxes_array(), sa.boxes_array(), rtol=1e-6, atol=1e-9)
        assert [x.label for x in sa.boxes] == [x.label for x in sb.boxes]
    assert (tmp_path / "y2" / "classes.txt").read_text().split() == classes


def _neu_subset(neu: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for stem in ("crazing_1", "inclusion_7", "patches_12", "pitted_surface_3", "rolled-in_scale_40",
                 "scratches_100", "inclusion_200"):
        shutil.copy(neu / "ANNOTATIONS" / f"{stem}.xml", dst)
    return dst


def test_voc_round_trip_is_exact(tmp_path):
    neu = shared("neu_det")
    ann = _neu_subset(neu, tmp_path / "ann")
    a = read_voc(neu / "IMAGES", ann, missing_annotation="ignore")
    assert len(a) == 7 and a.info["images_without_annotation"] == 1500 - 7
    assert all("difficult" in x.attrs for s in a for x in s.boxes)
    out = write_voc(a, tmp_path / "voc", images="symlink")
    b = read_voc(out / "images", out / "annotations")
    _same(a, b)
    assert [s.meta for s in a] == [s.meta for s in b]
    # integer VOC coordinates come back as the same text (x1 = xmin - 1, x2 = xmax)
    import xml.etree.ElementTree as ET
    for xml in ann.glob("*.xml"):
        src = [[o.findtext(f"bndbox/{k}").strip() for k in ("xmin", "ymin", "xmax", "ymax")]
               for o in ET.parse(xml).getroot().iter("object")]
        dst = [[o.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
               for o in ET.parse(out / "annotations" / xml.name).getroot().iter("object")]
        assert src == dst
    # "none": annotations only, read back against the original images folder
    c = read_voc(neu / "IMAGES", write_voc(a, tmp_path / "voc_none", images="none") / "annotations",
                 missing_annotation="ignore")
    _same(a, c)
    # float coordinates and clipped boxes (TUD) round-trip exactly too
    t = read_mot(shared("tud_campus"))[:30]
    tv = write_voc(t, tmp_path / "voc_tud", images="symlink")
    tb = read_voc(tv / "images", tv / "annotations")
    assert len(tb) == 30 and sum("." in str(x) for s in t for x in s.boxes_array().ravel()) > 0
    for sa, sb in zip(t, tb):  # VOC has no identity: geometry and labels are exact
        np.testing.assert_array_equal(sa.boxes_array(), sb.boxes_array())
        assert sa.labels == sb.labels


def test_writers_never_overwrite_and_leave_nothing_on_failure(tmp_path):
    img = _img(tmp_path / "src" / "a.png")
    s = DetectionSample(str(img), 64, 48, [Box(1, 2, 30, 40, "car")], "t", "a.png", {})
    (tmp_path / "exists").mkdir()
    for write in (lambda p: write_coco([s], p, ["car"]), lambda p: write_yolo([s], p, ["car"]),
                  lambda p: write_voc([s], p), lambda p: write_mot([s], p, columns=9, class_names={3: "car"})):
        with pytest.raises(FileExistsError):
            write(tmp_path / "exists")
    with pytest.raises(DataError, match="not in the categories"):
        write_coco([s], tmp_path / "bad", ["person"])
    with pytest.raises(DataError, match="carry no class"):
        write_mot([s, DetectionSample(str(img), 64, 48, [Box(1, 2, 30, 40, "bus")], "t", "b.png", {})],
                  tmp_path / "bad2", columns=7)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "src"]


# -- bad input ------------------------------------------------------------------------------------
def _coco_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    _img(root / "a.png")
    _img(root / "b.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.png", "width": 64, "height": 48},
                   {"id": 3, "file_name": "missing.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0, "identity": 4,
             "camera": "cam0", "visible_fraction": 0.5, "truncation": 0.1, "pixel_height": 20,
             "amodal_bbox": [1, 2, 10, 30]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [50, 2, 30, 20]},     # outside (x2 = 80 > 64)
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 10]},       # zero width
            {"id": 13, "image_id": 2, "category_id": 7, "bbox": [5, 5, 10, 10]},      # unknown category
            {"id": 14, "image_id": 99, "category_id": 1, "bbox": [5, 5, 10, 10]},     # no image entry
            {"id": 15, "image_id": 3, "category_id": 1, "bbox": [5, 5, 10, 10]},      # its image file is missing
            {"id": 16, "image_id": 2, "category_id": 2, "bbox": [3, 4, 5, 6], "iscrowd": 1, "area": 7.5},
        ],
    }
    (root / "ann.json").write_text(json.dumps(doc))
    return root / "ann.json"


def test_coco_bad_input_names_file_and_annotation(tmp_path):
    js = _coco_fixture(tmp_path)
    with pytest.raises(DataError) as e:
        read_coco(js)
    msg = str(e.value)
    assert msg.startswith("5 problem(s)")
    expect = {11: "outside", 12: "zero or negative size", 13: "unknown category_id 7", 14: "no entry in 'images'"}
    for aid, why in expect.items():
        line = next(x for x in msg.splitlines() if f"annotation id={aid} " in x)
        assert str(js) in line and why in line, line
    line = next(x for x in msg.splitlines() if "image id=3" in x)
    assert str(js) in line and "missing.png" in line and "not found" in line
    r = read_coco(js, policy="skip", report=tmp_path / "rep.json")
    assert r.num_boxes == 2 and len(r) == 2
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["skipped_by_reason"] == {"outside_image": 1, "zero_size": 1, "unknown_category": 1,
                                        "no_image_entry": 1, "missing_image": 1}
    assert "1 annotation(s) with it" in next(i["reason"] for i in rep["skipped"] if i["code"] == "missing_image")
    b = r[0].boxes[0]
    assert b.identity == 4 and b.attrs == {"camera": "cam0", "visible_fraction": 0.5,
                                           "truncation": 0.1, "pixel_height": 20, "amodal_bbox": [1, 2, 10, 30]}
    # the extra fields are written back
    again = read_coco(write_coco(r, tmp_path / "out", ["person", "car"], images="symlink"))
    _same(r, again)
    # clip_outside turns the partly-outside box into a clipped one (others still skipped)
    c = read_coco(js, policy="skip", clip_outside=True)
    assert c.num_boxes == 3 and len(c.clipped) == 1
    cb = next(x for x in c[0].boxes if x.label == "car")
    assert cb.xyxy == (50.0, 2.0, 64.0, 22.0) and cb.attrs["amodal_bbox"] == [50.0, 2.0, 30.0, 20.0]


def test_coco_broken_file_raises(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DataError, match=r"x\.json:2: not valid JSON"):
        read_coco(p)
    p.write_text(json.dumps({"images": [], "categories": [],
                             "annotations": [{"id": 1, "image_id": [1], "category_id": 1, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(DataError, match=r"x\.json: annotation id=1 .*must be integers"):
        read_coco(p)
    p.write_text('{"images": []}')
    with pytest.raises(DataError, match="annotations"):
        read_coco(p)
    with pytest.raises(DataError, match="not found"):
        read_coco(tmp_path / "nope.json")


def test_yolo_bad_input_names_file_and_line(tmp_path):
    root = tmp_path / "yolo"
    for n in ("a", "b", "c"):
        _img(root / "images" / f"{n}.jpg", 100, 50)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\nx 0.1 0.1 0.1 0.1\n"
                                           "5 0.5 0.5 0.1 0.1\n0 0.95 0.5 0.2 0.2\n\n1 0.5 0.5 0.0 0.3\n")
    (root / "labels" / "b.txt").write_text("1 0.25 0.5 0.5 1.0\n")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError) as e:
        read_yolo(root, ["person", "car"])
    msg = str(e.value)
    la = root / "labels" / "a.txt"
    assert f"{la}:2: expected 5 values" in msg
    assert f"{la}:3: not numbers" in msg
    assert f"{la}:4: class index 5 out of range" in msg
    assert f"{la}:5: box cx=0.95" in msg and "leaves [0, 1]" in msg
    assert f"{la}:7: box" in msg and "zero or negative size" in msg
    assert f"{root / 'labels' / 'orphan.txt'}: label file has no image" in msg
    r = read_yolo(root, ["person", "car"], policy="skip")
    assert [len(s.boxes) for s in r] == [1, 1, 0]
    assert r[2].meta["label_file"] is None  # no label file: explicitly empty
    assert r[1].boxes[0].xyxy == (0.0, 0.0, 50.0, 50.0)
    assert Counter(i.code for i in r.skipped) == {"malformed": 2, "class_out_of_range": 1,
                                                  "coords_out_of_range": 1, "zero_size": 1,
                                                  "label_without_image": 1}


def test_voc_bad_input(tmp_path):
    imgs, anns = tmp_path / "JPEGImages", tmp_path / "Annotations"
    _img(imgs / "a.jpg", 40, 30)
    _img(imgs / "lonely.jpg", 40, 30)
    anns.mkdir()

    def obj(name, b, difficult="0"):
        return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{b[0]}</xmin>"
                f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>")
    objs = (obj("dent", (1, 1, 40, 30), "1") + obj("dent", (5, 5, 60, 20)) + obj("dent", (5, 5, 4, 20))
            + obj("hole", (2, 2, 8, 8)) + "<object><name>dent</name><bndbox><xmin>a</xmin></bndbox></object>")
    (anns / "a.xml").write_text(f"<annotation><filename>a.jpg</filename><size><width>40</width><height>30</height>"
                                f"<depth>3</depth></size>{objs}</annotation>")
    (anns / "ghost.xml").write_text("<annotation><filename>ghost.jpg</filename><size><width>40</width>"
                                    "<height>30</height></size></annotation>")
    with pytest.raises(DataError) as e:
        read_voc(imgs, anns, labels=["dent"])
    msg = str(e.value)
    assert f"{anns / 'a.xml'}: object #2: box" in msg and "outside the 40x30 image" in msg
    assert f"{anns / 'a.xml'}: object #3: box" in msg and "zero or negative" in msg
    assert f"{anns / 'a.xml'}: object #4: unknown label 'hole'" in msg
    assert f"{anns / 'a.xml'}: object #5: missing or non-numeric <bndbox>" in msg
    assert f"{anns / 'ghost.xml'}: image" in msg and "not found" in msg
    assert f"{imgs / 'lonely.jpg'}: image has no annotation file" in msg
    r = read_voc(imgs, anns, labels=["dent"], policy="skip", missing_annotation="empty")
    assert [len(s.boxes) for s in r] == [1, 0] and r[1].meta["annotation_file"] is None
    b = r[0].boxes[0]
    assert b.xyxy == (0.0, 0.0, 40.0, 30.0) and b.attrs["difficult"] == 1  # 1-based inclusive -> whole image
    assert Counter(i.code for i in r.skipped) == {"outside_image": 1, "zero_size": 1, "unknown_label": 1,
                                                  "malformed": 1, "missing_image": 1}


def test_mot_bad_input_and_variants(tmp_path):
    seq = tmp_path / "seq"
    for n in (1, 2, 3):
        _img(seq / "img1" / f"{n:06d}.jpg", 100, 80)
    (seq / "gt").mkdir()
    gt = seq / "gt" / "gt.txt"
    gt.write_text("1,1,10,10,20,30,-1\n"
                  "1,2,10,10,20\n"            # 2: malformed (5 columns)
                  "2,1,10,x,20,30,-1\n"       # 3: not a number
                  "7,1,10,10,20,30,-1\n"      # 4: frame without image
                  "2,3,200,10,20,30,-1\n"     # 5: entirely outside
                  "2,4,10,10,0,30,-1\n"       # 6: zero width
                  "3,1,90,70,20,20,-1\n"      # 7: partly outside (clipped by default)
                  "1,1,12,10,20,30,-1\n")     # 8: duplicate frame/id
    with pytest.raises(DataError) as e:
        read_mot(seq)
    msg = str(e.value)
    assert msg.startswith("6 problem(s)")
    for lineno, why in [(2, "5 columns"), (3, "not numbers"), (4, "frame 7 has no image"),
                        (5, "entirely outside"), (6, "zero or negative"), (8, "already on line 1")]:
        assert f"{gt}:{lineno}: " in msg and why in msg.split(f"{gt}:{lineno}: ")[1].splitlines()[0]
    r = read_mot(seq, policy="skip")
    assert [len(s.boxes) for s in r] == [1, 0, 1] and len(r.skipped) == 6 and len(r.clipped) == 1
    assert r[2].boxes[0].xyxy == (90.0, 70.0, 100.0, 80.0)
    with pytest.raises(DataError, match=r"gt\.txt:7: box \(90, 70, 110, 90\) extends outside"):
        read_mot(seq, clip_outside=False)
    # MOT17-style 9 columns: class and visibility kept, written back identically
    gt.write_text("1,1,10,10,20,30,1,1,0.83\n1,2,50,10,20,30,0,7,0.25\n2,1,12,10,20,30,1,1,1\n")
    m = read_mot(seq)
    assert m.info["columns"] == 9 and [b.label for b in m[0].boxes] == ["pedestrian", "static_person"]
    assert m[0].boxes[0].attrs == {"conf": 1.0, "class_id": 1, "visibility": 0.83}
    out = write_mot(m, tmp_path / "seq9", images="copy")
    _same(m, read_mot(out))
    assert _mot_rows(out / "gt" / "gt.txt") == _mot_rows(gt)
    gt.write_text("1,1,10,10,20,30,1,42,0.5\n")
    with pytest.raises(DataError, match=r"gt\.txt:1: unknown class id 42"):
        read_mot(seq)
    gt.write_text("1,1,10,10,20,30\n")
    with pytest.raises(DataError, match=r"gt\.txt:1: 6 columns"):
        read_mot(seq)


# -- box utilities --------------------------------------------------------------------------------
def test_validate_boxes_and_clip_and_filter():
    s = DetectionSample("/x.png", 100, 50, [Box(0, 0, 100, 50, "a"), Box(-0.4, 0, 10, 50.4, "a"),
                                            Box(-1, 0, 10, 10, "a"), Box(5, 5, 5, 9, "a"),
                                            Box(float("nan"), 0, 1, 1, "a"), Box(1, 1, 2, 2, "zzz", 3)], "t", "x.png", {})
    probs = validate_boxes(s, "here", labels={"a"})
    assert len(probs) == 4 and all(p.startswith("here: box #") for p in probs)
    assert "#2" in probs[0] and "outside" in probs[0]
    assert "#3" in probs[1] and "zero or negative" in probs[1]
    assert "#4" in probs[2] and "non-finite" in probs[2]
    assert "#5 (id 3)" in probs[3] and "unknown label 'zzz'" in probs[3]
    assert s.key == "t:x.png" and Box(1, 2, 3, 4, "a", attrs={"k": 1}) == Box(1, 2, 3, 4, "a")
    assert len({Box(1, 2, 3, 4, "a", attrs={"k": 1}), Box(1, 2, 3, 4, "a")}) == 1  # hashable, attrs ignored

    boxes = np.array([[10, 10, 30, 30],       # inside
                      [-10, 0, 10, 10],       # half outside -> visibility 0.5, kept
                      [-18, 0, 2, 10],        # 10 % visible -> dropped
                      [95, 0, 101, 40],       # clipped to 5 px wide, kept
                      [99, 0, 120, 40],       # 1 px visible wide -> too small
                      [np.nan, 0, 5, 5],      # non-finite
                      [200, 0, 220, 10]], float)  # entirely outside
    keep, clipped = clip_and_filter(boxes, list("abcdefg"), 100, 50)
    assert keep.tolist() == [0, 1, 3]
    np.testing.assert_array_equal(clipped, [[10, 10, 30, 30], [0, 0, 10, 10], [95, 0, 100, 40]])
    # visibility relative to given original areas (e.g. before an augmentation)
    keep, _ = clip_and_filter(boxes[:1], None, 100, 50, original_areas=[4000.0])
    assert keep.tolist() == []
    keep, _ = clip_and_filter(np.zeros((0, 4)), [], 10, 10)
    assert keep.shape == (0,)


# -- augmentation ---------------------------------------------------------------------------------
def test_detection_augment_flip_is_exact_and_seeded():
    img = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[10, 5, 20, 25], [-10, 0, 10, 10], [-50, 0, -40, 10]], float)
    pipe = build_detection_augment([A.HorizontalFlip(p=1.0)])
    r = apply_detection_augment(pipe, img, boxes, ["a", "b", "c"], seed=3)
    assert r.indices.tolist() == [0, 1] and r.labels == ["a", "b"]
    np.testing.assert_allclose(r.boxes, [[40, 5, 50, 25], [50, 0, 60, 10]], atol=1e-4)
    pipe2 = build_detection_augment([A.Affine(scale=(0.7, 1.3), rotate=(-20, 20), p=1.0)])
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    r1 = apply_detection_augment(pipe2, rgb, boxes, ["a", "b", "c"], seed=7)
    r2 = apply_detection_augment(pipe2, rgb, boxes, ["a", "b", "c"], seed=7)
    np.testing.assert_array_equal(r1.boxes, r2.boxes)
    np.testing.assert_array_equal(r1.image, r2.image)
    with pytest.raises(TypeError):
        build_detection_augment(["not a transform"])


def _transform(kind: str, data, h: int, w: int):
    d = data.draw
    if kind == "HorizontalFlip":
        return A.HorizontalFlip(p=1.0)
    if kind == "Affine":
        return A.Affine(scale=(d(st.floats(0.5, 1.0)), d(st.floats(1.0, 1.6))),
                        translate_percent=(-d(st.floats(0, 0.3)), d(st.floats(0, 0.3))),
                        rotate=(-d(st.floats(0, 45)), d(st.floats(0, 45))), p=1.0)
    if kind == "RandomResizedCrop":
        return A.RandomResizedCrop(size=(d(st.integers(16, 96)), d(st.integers(16, 96))), scale=(0.1, 1.0), p=1.0)
    if kind == "RandomSizedBBoxSafeCrop":
        return A.RandomSizedBBoxSafeCrop(height=d(st.integers(16, 96)), width=d(st.integers(16, 96)), p=1.0)
    if kind == "PadIfNeeded":
        return A.PadIfNeeded(min_height=h + d(st.integers(0, 40)), min_width=w + d(st.integers(0, 40)),
                             position=d(st.sampled_from(["center", "top_left", "random"])), p=1.0)
    if kind == "Perspective":
        return A.Perspective(scale=(0.05, d(st.floats(0.05, 0.2))), fit_output=d(st.booleans()), p=1.0)
    if kind == "MotionBlur":
        return A.MotionBlur(blur_limit=(3, 7), p=1.0)
    if kind == "GaussNoise":
        return A.GaussNoise(std_range=(0.05, 0.2), p=1.0)
    if kind == "RandomBrightnessContrast":
        return A.RandomBrightnessContrast(p=1.0)
    if kind == "RandomRain":
        return A.RandomRain(drop_length=d(st.integers(1, 10)), blur_value=3, p=1.0)
    return A.RandomFog(p=1.0)


KINDS = ["HorizontalFlip", "Affine", "RandomResizedCrop", "RandomSizedBBoxSafeCrop", "PadIfNeeded", "Perspective",
         "MotionBlur", "GaussNoise", "RandomBrightnessContrast", "RandomRain", "RandomFog"]


@st.composite
def _boxes(draw, w: int, h: int):
    n = draw(st.integers(0, 6))
    out = []
    for _ in range(n):
        x1 = draw(st.floats(-0.5 * w, 1.2 * w, allow_nan=False))
        y1 = draw(st.floats(-0.5 * h, 1.2 * h, allow_nan=False))
        bw = draw(st.floats(0.5, 0.9 * w))
        bh = draw(st.floats(0.5, 0.9 * h))
        out.append([x1, y1, x1 + bw, y1 + bh])
    return np.array(out, float).reshape(-1, 4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_augmented_boxes_are_always_inside_and_non_degenerate(data):
    h, w = data.draw(st.integers(16, 112), label="h"), data.draw(st.integers(16, 112), label="w")
    boxes = data.draw(_boxes(w, h), label="boxes")
    labels = [f"c{i}" for i in range(len(boxes))]
    kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=4), label="pipeline")
    min_vis = data.draw(st.sampled_from([0.0, 0.3, 0.7]), label="min_visibility")
    min_size = data.draw(st.sampled_from([0.0, 2.0, 5.0]), label="min_size")
    pipe = build_detection_augment([_transform(k, data, h, w) for k in kinds], min_visibility=min_vis,
                                   min_size=min_size)
    image = np.random.default_rng(len(boxes)).integers(0, 255, (h, w, 3), dtype=np.uint8)
    r = apply_detection_augment(pipe, image, boxes, labels, seed=data.draw(st.integers(0, 2**31 - 1), label="seed"))
    oh, ow = r.image.shape[:2]
    assert r.image.dtype == np.uint8 and r.image.shape[2] == 3
    assert r.boxes.shape == (len(r.labels), 4) and r.indices.shape == (len(r.labels),)
    assert np.isfinite(r.boxes).all()
    assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 1] >= 0).all()
    assert (r.boxes[:, 2] <= ow).all() and (r.boxes[:, 3] <= oh).all()
    assert (r.boxes[:, 2] > r.boxes[:, 0] + min_size).all() and (r.boxes[:, 3] > r.boxes[:, 1] + min_size).all()
    assert len(set(r.indices.tolist())) == len(r.indices) and all(0 <= i < len(boxes) for i in r.indices)
    assert r.labels == [labels[i] for i in r.indices]
    assert not any(math.isnan(v) for v in r.boxes.ravel())
