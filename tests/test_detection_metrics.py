"""Detection evaluation (vision.metrics.detection): real pycocotools runs on hand-built cases whose AP is
known in closed form, height buckets, provenance slices, ignore regions, figures, and the real TUD-Campus."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.data.boxes import Box, DetectionSample
from vision.metrics.detection import (UNDEFINED, error_gallery, evaluate_detections, match_detections,
                                      pr_curve_figure)

from conftest import shared

CLASSES = ["person", "car"]
#: pycocotools' 101 recall thresholds are 0, 0.01, ..., 1; a class whose recall stops at r with interpolated
#: precision p everywhere before gets AP = p * (number of thresholds <= r) / 101
N_THR = 101


def sample(boxes: list[Box], name: str = "img", source: str = "cam", meta: dict | None = None,
           width: int = 640, height: int = 480) -> DetectionSample:
    return DetectionSample(f"/data/{source}/{name}.jpg", width, height, boxes, source, f"{name}.jpg", meta or {})


def person(x1: float, y1: float, x2: float, y2: float, **attrs) -> Box:
    return Box(x1, y1, x2, y2, "person", attrs=attrs)


def pred(boxes, scores, labels=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.zeros(len(boxes), dtype=np.int64) if labels is None else np.asarray(labels)
    return boxes, np.asarray(scores, dtype=np.float64), labels


def no_pred():
    return pred(np.zeros((0, 4)), [])


def perfect(samples: list[DetectionSample], score: float = 1.0):
    return [pred([b.xyxy for b in s.boxes], [score] * len(s.boxes), [CLASSES.index(b.label) for b in s.boxes])
            for s in samples]


def strict_json(report: dict) -> dict:
    return json.loads(json.dumps(report, allow_nan=False))


@pytest.fixture
def scene() -> list[DetectionSample]:
    return [sample([person(10, 10, 40, 100), person(100, 50, 160, 250), Box(300, 300, 420, 380, "car")], "a"),
            sample([person(200, 100, 230, 140)], "b"),
            sample([], "empty")]


# -- AP in closed form --------------------------------------------------------------------------------
def test_perfect_predictions_score_one(scene):
    r = evaluate_detections(scene, perfect(scene), CLASSES)
    assert r["ap"] == r["ap50"] == r["ap75"] == r["ar100"] == 1.0
    assert r["per_class"]["person"] == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0, "num_gt": 3, "num_pred": 3}
    assert r["per_class"]["car"]["ap"] == 1.0
    assert (r["num_images"], r["num_gt"], r["num_pred"], r["num_ignored"]) == (3, 4, 4, 0)
    assert r["pr_curve"]["person"]["recall"] == pytest.approx(np.linspace(0, 1, N_THR))
    assert r["pr_curve"]["person"]["precision"] == [1.0] * N_THR
    assert strict_json(r) == r


def test_shifted_boxes_iou_between_thresholds():
    # 100x200 box shifted right by 20 px: IoU = 80 / 120 = 2/3 -> matched at IoU .50, .55, .60, .65 only
    gt = [sample([person(100, 100, 200, 300)])]
    r = evaluate_detections(gt, [pred([[120, 100, 220, 300]], [0.9])], CLASSES)
    assert r["ap50"] == 1.0
    assert r["ap75"] == 0.0
    assert r["ap"] == pytest.approx(4 / 10)
    [tp] = match_detections(gt, [pred([[120, 100, 220, 300]], [0.9])], CLASSES, iou=0.5)
    assert tp == {"kind": "tp", "index": 0, "count": 1}
    fp = [x for x in match_detections(gt, [pred([[120, 100, 220, 300]], [0.9])], CLASSES, iou=0.7)
          if x["kind"] == "fp"]
    assert fp[0]["best_iou"] == pytest.approx(2 / 3) and fp[0]["cause"] == "localization"


def test_half_the_ground_truth_missing_gives_recall_limited_ap():
    gt = [sample([person(10 + 60 * i, 10, 50 + 60 * i, 110) for i in range(4)])]
    found = [b.xyxy for b in gt[0].boxes[:2]]
    r = evaluate_detections(gt, [pred(found, [0.9, 0.8])], CLASSES)
    # precision 1 up to recall 0.5: the 51 thresholds 0, .01, ..., .50
    assert r["ap50"] == pytest.approx(51 / N_THR) and r["ap50"] == pytest.approx(0.5, abs=0.01)
    assert r["ar100"] == 0.5
    fns = [x for x in match_detections(gt, [pred(found, [0.9, 0.8])], CLASSES) if x["kind"] == "fn"]
    assert [f["box"] for f in fns] == [list(b.xyxy) for b in gt[0].boxes[2:]]
    assert all(f["height"] == 100 and f["label"] == "person" and f["best_iou"] == 0 for f in fns)


def test_false_positive_ranked_first_lowers_ap_by_the_101_point_rule():
    boxes = [person(10, 10, 50, 110), person(100, 10, 140, 110)]
    fp_box = [400, 300, 440, 400]
    gt = [sample(boxes)]
    # FP (0.9), TP (0.8), TP (0.7): precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the interpolated precision
    # (max precision at recall >= r) is 2/3 at every threshold -> AP = 2/3
    r = evaluate_detections(gt, [pred([fp_box, boxes[0].xyxy, boxes[1].xyxy], [0.9, 0.8, 0.7])], CLASSES)
    assert r["ap50"] == pytest.approx(2 / 3, abs=1e-12)
    # with 4 GT and the same three predictions recall stops at 1/2: 51 thresholds at 2/3, 50 at 0
    gt4 = [sample(boxes + [person(200, 10, 240, 110), person(300, 10, 340, 110)])]
    r4 = evaluate_detections(gt4, [pred([fp_box, boxes[0].xyxy, boxes[1].xyxy], [0.9, 0.8, 0.7])], CLASSES)
    assert r4["ap50"] == pytest.approx(51 / N_THR * 2 / 3, abs=1e-12)
    # the same detections without the FP score higher; with the FP ranked last, AP is untouched
    r_clean = evaluate_detections(gt4, [pred([boxes[0].xyxy, boxes[1].xyxy], [0.8, 0.7])], CLASSES)
    r_last = evaluate_detections(gt4, [pred([fp_box, boxes[0].xyxy, boxes[1].xyxy], [0.1, 0.8, 0.7])], CLASSES)
    assert r_clean["ap50"] == r_last["ap50"] == pytest.approx(51 / N_THR)
    assert r_clean["ap50"] > r4["ap50"]
    [fp] = [x for x in match_detections(gt4, [pred([fp_box], [0.9])], CLASSES) if x["kind"] == "fp"]
    assert fp == {"kind": "fp", "index": 0, "box": [400.0, 300.0, 440.0, 400.0], "score": 0.9, "label": "person",
                  "best_iou": 0.0, "height": 100.0, "cause": "background"}


def test_max_detections_is_per_image():
    gt = [sample([person(10, 10, 50, 110), person(100, 10, 140, 110)])]
    dets = [pred([b.xyxy for b in gt[0].boxes], [0.9, 0.8])]
    r = evaluate_detections(gt, dets, CLASSES, max_detections=1)
    assert r["ar100"] == 0.5 and r["num_pred"] == 1 and r["params"]["max_detections"] == 1


# -- height buckets -------------------------------------------------------------------------------------
def test_size_buckets_use_height_not_area():
    short_wide = person(10, 10, 110, 40)     # 30 px tall, 100 wide: area 3000
    mid_thin = person(200, 10, 208, 110)     # 100 px tall, 8 wide: area 800
    tall = person(300, 10, 320, 210)         # 200 px tall, 20 wide: area 4000
    gt = [sample([short_wide, mid_thin, tall])]
    # an area-based bucketing (area against the squared limits 50^2 / 150^2, or COCO's 32^2 / 96^2) would put
    # the missed 30-px box in the middle bucket and the 100-px box in the small one
    assert 50 ** 2 <= short_wide.area < 150 ** 2 and mid_thin.area < 50 ** 2
    assert 32 ** 2 <= short_wide.area < 96 ** 2 and mid_thin.area < 32 ** 2
    # the 30-px one is missed; a confident 20-px-tall false positive is outside the two larger buckets
    dets = [pred([mid_thin.xyxy, tall.xyxy, [500, 300, 510, 320]], [0.8, 0.7, 0.95])]
    r = evaluate_detections(gt, dets, CLASSES)
    assert {k: v["num_gt"] for k, v in r["size"].items()} == {"<50px": 1, "50-150px": 1, ">150px": 1}
    assert r["size"]["<50px"]["ap50"] == 0.0
    assert r["size"]["50-150px"]["ap50"] == 1.0 and r["size"]["50-150px"]["ap"] == 1.0
    assert r["size"][">150px"]["ap50"] == 1.0
    assert r["ap50"] < 2 / 3  # all sizes: the 20-px FP ranks first and one of three is missed
    assert r["params"]["size_buckets"] == {"<50px": [0.0, 50.0], "50-150px": [50.0, 150.0], ">150px": [150.0, None]}
    strict_json(r)


def test_size_buckets_are_half_open_and_configurable():
    gt = [sample([person(0, 0, 10, 50), person(20, 0, 30, 150), person(40, 0, 50, 49.5)])]
    r = evaluate_detections(gt, perfect(gt), CLASSES)
    assert {k: v["num_gt"] for k, v in r["size"].items()} == {"<50px": 1, "50-150px": 1, ">150px": 1}
    assert all(v["ap"] == 1.0 for v in r["size"].values())
    r2 = evaluate_detections(gt, perfect(gt), CLASSES, size_buckets=((0, 100), (100, 400)))
    assert {k: v["num_gt"] for k, v in r2["size"].items()} == {"<100px": 2, "100-400px": 1}
    empty = evaluate_detections([sample([person(0, 0, 10, 200)])], [no_pred()], CLASSES)
    assert empty["size"]["<50px"] == {"ap": UNDEFINED, "ap50": UNDEFINED, "ap75": UNDEFINED, "ar100": UNDEFINED,
                                      "num_gt": 0}
    assert empty["size"][">150px"]["ap"] == 0.0


# -- slices ---------------------------------------------------------------------------------------------------
def test_slices_by_source_kind_and_meta_field():
    def cam(i, weather):
        meta = {"params": {"weather": weather}} | ({"sequence": "seq1"} if i == 0 else {})
        return sample([person(10, 10, 50, 110), person(100, 10, 140, 110)], f"f{i}", "camA", meta)
    real = [cam(0, "rain"), cam(1, "clear"), sample([person(5, 5, 45, 105)], "x", "camB")]
    synth = [sample([person(10, 10, 50, 110)], f"s{i}", "synth", {"params": {"weather": "rain"}}) for i in range(2)]
    samples = real + synth
    preds = perfect(real) + [no_pred() for _ in synth]
    fields = ("source", "kind", "params.weather", "sequence")
    r = evaluate_detections(samples, preds, CLASSES, slice_by=fields, kinds={"synth": "synthetic"})
    s = r["slices"]
    assert list(s) == list(fields)
    assert s["source"]["camA"]["ap"] == 1.0 and s["source"]["camA"]["num_images"] == 2
    assert s["source"]["camA"]["num_gt"] == 4
    assert s["source"]["synth"]["ap"] == 0.0 and s["source"]["synth"]["num_gt"] == 2
    assert s["kind"]["real"] == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0, "ar100": 1.0, "num_images": 3,
                                 "num_gt": 5, "num_pred": 5}
    assert s["kind"]["synthetic"]["ap50"] == 0.0
    assert set(s["params.weather"]) == {"rain", "clear", "unknown"}
    assert s["params.weather"]["clear"]["ap"] == 1.0 and s["params.weather"]["unknown"]["num_images"] == 1
    rain = s["params.weather"]["rain"]
    assert rain["num_images"] == 3 and rain["ap50"] == pytest.approx(51 / N_THR)  # 2 of 4 found, precision 1
    assert set(s["sequence"]) == {"seq1", "unknown"}
    # each slice is its own evaluation: the same as evaluating that subset alone
    for value, idx in {"rain": [0, 3, 4], "clear": [1], "unknown": [2]}.items():
        alone = evaluate_detections([samples[i] for i in idx], [preds[i] for i in idx], CLASSES, slice_by=())
        assert (alone["ap"], alone["ap50"]) == (s["params.weather"][value]["ap"], s["params.weather"][value]["ap50"])
    strict_json(r)


def test_single_slice_value_is_kept():
    gt = [sample([person(10, 10, 50, 110)], f"f{i}") for i in range(2)]
    r = evaluate_detections(gt, perfect(gt), CLASSES, slice_by=("kind", "params.time_of_day"))
    assert r["slices"]["kind"] == {"real": {"ap": 1.0, "ap50": 1.0, "ap75": 1.0, "ar100": 1.0, "num_images": 2,
                                            "num_gt": 2, "num_pred": 2}}
    assert list(r["slices"]["params.time_of_day"]) == ["unknown"]


# -- ignore regions, empties, errors ----------------------------------------------------------------------------
def test_ignore_regions_are_neither_fn_nor_fp():
    crowd = person(300, 100, 500, 300, iscrowd=1)
    ignored = person(50, 300, 90, 400, ignore=True)
    regular = person(10, 10, 50, 110)
    gt = [sample([regular, crowd, ignored])]
    # a detection inside the crowd region outranks the true positive; nothing is found on the ignore box
    dets = [pred([[320, 120, 380, 280], regular.xyxy], [0.95, 0.9])]
    r = evaluate_detections(gt, dets, CLASSES)
    assert r["ap"] == r["ap50"] == 1.0
    assert (r["num_gt"], r["num_ignored"]) == (1, 2)
    assert match_detections(gt, dets, CLASSES) == [{"kind": "tp", "index": 0, "count": 1}]
    # the same boxes as regular ground truth: one FP ranked first and two misses
    plain = [sample([regular, person(*crowd.xyxy), person(*ignored.xyxy)])]
    r_plain = evaluate_detections(plain, dets, CLASSES)
    assert r_plain["num_gt"] == 3 and r_plain["ap50"] < 0.5
    kinds = sorted(x["kind"] for x in match_detections(plain, dets, CLASSES))
    assert kinds == ["fn", "fn", "fp", "tp"]


def test_unknown_ground_truth_label_names_the_file():
    gt = [sample([person(0, 0, 10, 10)], "ok"), sample([Box(0, 0, 10, 10, "bicycle")], "bad_frame")]
    with pytest.raises(ValueError, match=re.escape("/data/cam/bad_frame.jpg") + ".*'bicycle'"):
        evaluate_detections(gt, [no_pred(), no_pred()], CLASSES)
    with pytest.raises(ValueError, match="bad_frame.*bicycle"):
        match_detections(gt, [no_pred(), no_pred()], CLASSES)


def test_bad_predictions_are_refused():
    gt = [sample([person(0, 0, 10, 10)])]
    with pytest.raises(ValueError, match="1 samples but 2 predictions"):
        evaluate_detections(gt, [no_pred(), no_pred()], CLASSES)
    with pytest.raises(ValueError, match="labels must be integers in"):
        evaluate_detections(gt, [pred([[0, 0, 10, 10]], [0.5], [2])], CLASSES)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_detections(gt, [pred([[0, 0, np.nan, 10]], [0.5])], CLASSES)


def test_empty_predictions_images_without_gt_and_classes_without_gt():
    gt = [sample([person(10, 10, 50, 110)], "a"), sample([], "b")]
    r = evaluate_detections(gt, [no_pred(), no_pred()], CLASSES)
    assert r["ap"] == r["ap50"] == r["ar100"] == 0.0 and r["num_pred"] == 0
    assert r["per_class"]["person"]["ap"] == 0.0
    assert r["per_class"]["car"] == {"ap": UNDEFINED, "ap50": UNDEFINED, "ap75": UNDEFINED, "num_gt": 0, "num_pred": 0}
    assert r["slices"]["source"]["cam"]["ap"] == 0.0
    assert list(r["pr_curve"]) == ["person"] and r["pr_curve"]["person"]["precision"] == [0.0] * N_THR
    strict_json(r)
    # a false positive on an image without ground truth costs precision; a car FP with no car GT stays -1
    r2 = evaluate_detections(gt, [perfect(gt[:1], score=0.5)[0],
                                  pred([[0, 0, 30, 90], [5, 5, 60, 60]], [0.99, 0.5], [0, 1])], CLASSES)
    assert r2["per_class"]["person"]["ap50"] == pytest.approx(0.5)
    assert r2["per_class"]["car"]["ap"] == UNDEFINED and r2["per_class"]["car"]["num_pred"] == 1
    # no ground truth at all and no images at all: everything undefined, still strict JSON
    for samples, preds in (([sample([], "x")], [pred([[0, 0, 5, 5]], [0.3])]), ([], [])):
        r3 = evaluate_detections(samples, preds, CLASSES)
        assert r3["ap"] == r3["ap50"] == r3["ar100"] == UNDEFINED and r3["pr_curve"] == {}
        strict_json(r3)


def test_deterministic_and_mapping_predictions(scene):
    # score ties across images and within an image
    dets = [{"boxes": [[10, 10, 40, 100], [0, 0, 20, 20]], "scores": [0.5, 0.5], "labels": [0, 0]},
            {"boxes": [[200, 100, 230, 140]], "scores": [0.5], "labels": [0]}, no_pred()]
    r1 = evaluate_detections(scene, dets, CLASSES, slice_by=("source", "kind", "sequence"))
    r2 = evaluate_detections(scene, dets, CLASSES, slice_by=("source", "kind", "sequence"))
    assert json.dumps(r1, sort_keys=True) == json.dumps(r2, sort_keys=True)
    assert r1["per_class"]["person"]["num_pred"] == 3


def test_pycocotools_prints_nothing(scene, capsys):
    evaluate_detections(scene, perfect(scene), CLASSES, slice_by=("source", "sequence"))
    assert capsys.readouterr().out == ""


# -- figures ----------------------------------------------------------------------------------------------------
def _write_images(tmp_path: Path, samples: list[DetectionSample]) -> list[DetectionSample]:
    rng = np.random.default_rng(0)
    out = []
    for s in samples:
        p = tmp_path / s.source / s.relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (s.height, s.width, 3), dtype=np.uint8)).save(p.with_suffix(".png"))
        out.append(DetectionSample(str(p.with_suffix(".png")), s.width, s.height, s.boxes, s.source,
                                   Path(s.relpath).with_suffix(".png").name, s.meta))
    return out


def test_error_gallery_and_pr_curve_write_readable_pngs(tmp_path, scene):
    samples = _write_images(tmp_path, scene)
    dets = [pred([[10, 10, 40, 100], [500, 20, 560, 200], [290, 290, 430, 390]], [0.9, 0.95, 0.6], [0, 0, 1]),
            no_pred(), pred([[600, 400, 700, 500]], [0.4])]  # the last one sticks out of the 640x480 image
    out = error_gallery(samples, dets, CLASSES, tmp_path / "gallery" / "errors.png", k=4)
    assert out == tmp_path / "gallery" / "errors.png"
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 100
    records = match_detections(samples, dets, CLASSES)
    assert sum(r["kind"] == "fp" for r in records) == 2 and sum(r["kind"] == "fn" for r in records) == 2
    assert not list((tmp_path / "gallery").glob(".*"))  # atomic write: no temporary left behind

    # a custom reader, and no errors -> None and nothing written
    assert error_gallery(samples, perfect(scene), CLASSES, tmp_path / "none.png",
                         read=lambda s: np.zeros((s.height, s.width), np.uint8)) is None
    assert not (tmp_path / "none.png").exists()

    report = evaluate_detections(samples, dets, CLASSES)
    pr = pr_curve_figure(report, tmp_path / "pr.png")
    with Image.open(pr) as im:
        im.load()
        assert im.format == "PNG"
    with Image.open(pr_curve_figure(evaluate_detections([], [], CLASSES), tmp_path / "pr_empty.png")) as im:
        im.load()


# -- real data ------------------------------------------------------------------------------------------------
def test_tud_campus_ground_truth_against_itself():
    from vision.data.detection import read_mot

    seq = read_mot(shared("tud_campus"), check_images=False)
    assert len(seq) > 0
    classes = sorted({b.label for s in seq for b in s.boxes})
    r = evaluate_detections(seq, perfect_for(seq, classes), classes, slice_by=("source", "sequence"))
    assert r["ap50"] == 1.0 and r["ap"] == 1.0
    assert r["num_gt"] == sum(len(s.boxes) for s in seq)
    assert sum(v["num_gt"] for v in r["size"].values()) == r["num_gt"]
    assert list(r["slices"]["sequence"]) == [seq[0].meta["sequence"]]
    strict_json(r)


def perfect_for(samples: list[DetectionSample], classes: list[str]):
    return [pred([b.xyxy for b in s.boxes], [1.0] * len(s.boxes), [classes.index(b.label) for b in s.boxes])
            for s in samples]
