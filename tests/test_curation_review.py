"""Curation, part 2: predictions + evaluation (detection, classification, re-id ranks) with real bundles, the
saved review views, the FiftyOne App in headless Chromium, and tags read back by the CLI.

Real FiftyOne on a private MongoDB (``tests/curation_support.py``); the models are tiny but real (trained for
a few steps and exported to ONNX edge bundles, run by the torch-free runtime).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import curation_support
from conftest import REPO, make_tiny_folder, shared
from curation_support import PY, cli, json_out, toy_scene
from vision.data.boxes import Box, DetectionSample
from vision.data.detection import write_coco

mongo_uri, fo, dsname = curation_support.mongo_uri, curation_support.fo, curation_support.dsname


@pytest.fixture(scope="module")
def det_bundle(tmp_path_factory) -> Path:
    return curation_support.detection_bundle(tmp_path_factory.mktemp("det"))


def _toy_coco(root: Path) -> tuple[Path, list[DetectionSample]]:
    """The six toy scenes as COCO, with planted annotation problems:
    scene 2: the person is labelled 'vehicle' (a label mistake); scene 3: the vehicle box is missing;
    scene 4: a spurious 'person' box on empty background; scenes 5 and 6 are night frames."""
    samples = []
    for seed in curation_support.DET_SHAPES:
        img, boxes = toy_scene(seed)
        p = root / "img" / f"scene_{seed}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        bs = [Box(*map(float, b), lab, None, {"occluded": False}) for b, lab in boxes]
        if seed == 2:
            bs[0] = Box(bs[0].x1, bs[0].y1, bs[0].x2, bs[0].y2, "vehicle", None, {"occluded": False})
        if seed == 3:
            bs = bs[:1]
        if seed == 4:
            h, w = img.shape[:2]
            spot = next((x, y) for x in range(4, w - 30, 7) for y in range(4, h - 60, 7)
                        if all(x + 24 <= b.x1 or x >= b.x2 or y + 56 <= b.y1 or y >= b.y2 for b in bs))
            bs.append(Box(float(spot[0]), float(spot[1]), spot[0] + 24.0, spot[1] + 56.0, "person", None, {}))
        meta = {"condition": "night" if seed >= 5 else "day", "camera": 1, "frame": seed}
        samples.append(DetectionSample(str(p), img.shape[1], img.shape[0], bs, "toy", p.name, meta))
    return write_coco(samples, root / "coco", DET_LABELS, images="none"), samples


DET_LABELS = curation_support.DET_LABELS


def test_predict_evaluate_views_and_clean_export(fo, dsname, tmp_path, det_bundle):
    from vision.curation.load import get_dataset, load_source, to_detection_samples

    coco, src = _toy_coco(tmp_path)
    assert load_source(dsname, coco, name="toy").added == 6
    gone = tmp_path / "img" / "scene_6.png"
    gone.rename(tmp_path / "scene_6.moved")  # vanishes after loading: predict must say so

    bad = cli(tmp_path, "action=predict", f"dataset={dsname}", f"predict.model={tmp_path / 'no-model'}")
    assert bad.returncode == 2 and "no-model: model not found" in bad.stderr and "Traceback" not in bad.stderr
    out = json_out(cli(tmp_path, "action=predict", f"dataset={dsname}", f"predict.model={det_bundle}",
                       "predict.field=pred", "predict.eval_key=ev"))
    p, ev = out["predict"], out["evaluation"]
    assert (p["task"], p["kind"], p["samples"], p["predicted"]) == ("detection", "bundle", 6, 5)
    assert [(q["key"], q["code"]) for q in p["problems"]] == [("toy:scene_6.png", "unreadable_image")]
    assert "scene_6.png" in p["problems"][0]["reason"]

    ds = get_dataset(dsname)
    F = fo.ViewField
    s6 = ds.one(F("key") == "toy:scene_6.png")
    assert s6["pred"] is None and "image file not found" in s6["pred_error"]
    # per-object TP / FP / FN, and the totals add up
    n_gt = sum(len(s.boxes) for s in src[:5])
    n_pred = ds.count("pred.detections")
    gt_marks = ds.exists("pred").values("ground_truth.detections.ev", unwind=True)  # scene 6: not evaluated
    assert not any(d.has_field("ev") for d in s6["ground_truth"].detections)
    pred_marks = ds.values("pred.detections.ev", unwind=True)
    assert set(pred_marks) <= {"tp", "fp"} and set(gt_marks) <= {"tp", "fn"}
    assert ev["tp"] == pred_marks.count("tp") == gt_marks.count("tp") >= 6
    assert ev["tp"] + ev["fn"] == n_gt and ev["tp"] + ev["fp"] == n_pred
    assert 0.0 < ev["mAP"] <= 1.0 and set(ev["ap_per_class"]) == {"person", "vehicle"}
    errs = dict(zip(*ds.values(["key", "ev_errors"])))
    assert all(errs[f"toy:scene_{k}.png"] >= 1 for k in (2, 3, 4)) and errs["toy:scene_1.png"] == 0
    # the planted label mistake is the likeliest one
    mk = dict(zip(*ds.exists("ev_mistakenness").values(["key", "ev_mistakenness"])))
    assert max(mk, key=mk.get) == "toy:scene_2.png"
    wrong = ds.one(F("key") == "toy:scene_2.png")["ground_truth"].detections[0]
    assert wrong["ev_mistakenness"] == mk["toy:scene_2.png"] and wrong["ev"] == "fn"
    hard = ds.values("ev_hardness")
    assert all(h is None or 0.0 <= h <= 1.0 for h in hard) and sum(h is not None for h in hard) == 5
    assert "ev" in ds.list_evaluations() and "ev_mistakenness" in ds.list_brain_runs()

    # saved review views
    views = json_out(cli(tmp_path, "action=views", f"dataset={dsname}", "views.eval_key=ev"))
    assert {"likely_mistakes", "errors", "hard", "small_objects", "night_frames"} <= set(views["saved"])
    assert set(views["skipped"]) == {"duplicates", "leaks"} and "action=dedup" in views["skipped"]["leaks"]
    ds.reload()
    assert ds.load_saved_view("likely_mistakes").first()["key"] == "toy:scene_2.png"
    errors = ds.load_saved_view("errors")
    assert {"toy:scene_2.png", "toy:scene_3.png", "toy:scene_4.png"} <= set(errors.values("key"))
    assert errors.values("ev_errors") == sorted(errors.values("ev_errors"), reverse=True)
    assert sorted(ds.load_saved_view("night_frames").values("key")) == ["toy:scene_5.png", "toy:scene_6.png"]
    small = ds.load_saved_view("small_objects")
    heights = [b[3] * h for bbs, h in zip(small.values("ground_truth.detections.bounding_box"), small.values("height"))
               for b in bbs]
    assert heights and all(h < 50 for h in heights)
    assert ds.count("ground_truth.detections") - small.count("ground_truth.detections") > 0  # tall ones filtered
    json_out(cli(tmp_path, "action=dedup", f"dataset={dsname}"))
    again = json_out(cli(tmp_path, "action=views", f"dataset={dsname}", "views.eval_key=ev",
                         "views.names=[duplicates,leaks]"))
    assert set(again["saved"]) == {"duplicates", "leaks"} and again["saved"]["leaks"]["samples"] == 0

    # a snapshot of a reviewed view: the evaluation's marks are not exported as box attributes
    snap = json_out(cli(tmp_path, "action=export-snapshot", f"dataset={dsname}", "snapshot.name=errs",
                        "snapshot.saved_view=errors", "snapshot.formats=[coco]"))
    assert snap["counts"]["samples"] == len(errors)
    from vision.data.detection import read_coco

    back = {Path(s.relpath).name: s for s in read_coco(Path(snap["snapshot"]) / "coco" / "annotations.json")}
    for s in src:
        if Path(s.relpath).name in back:
            assert [(b.xyxy, b.label, b.attrs) for b in back[Path(s.relpath).name].boxes] == \
                [(b.xyxy, b.label, b.attrs) for b in s.boxes]
    assert all(not set(b.attrs) - {"occluded"} for s in to_detection_samples(ds) for b in s.boxes)
    summ = json_out(cli(tmp_path, "action=summary", f"dataset={dsname}"))
    assert summ["evaluations"]["ev"]["tp"] == ev["tp"] and "pred" in summ["predictions"]
    assert "likely_mistakes" in summ["saved_views"]


def test_tampered_bundle_is_refused(fo, dsname, tmp_path, det_bundle):
    import shutil

    from vision.curation.load import load_source

    coco, _ = _toy_coco(tmp_path)
    load_source(dsname, coco, name="toy")
    copy = tmp_path / "bundle"
    shutil.copytree(det_bundle, copy)
    with open(copy / "model_fp32.onnx", "ab") as f:
        f.write(b"\0")
    proc = cli(tmp_path, "action=predict", f"dataset={dsname}", f"predict.model={copy}")
    assert proc.returncode == 2 and "model_fp32.onnx: sha256 mismatch" in proc.stderr


def test_classification_predictions_hardness_and_mistakenness(fo, dsname, tmp_path):
    from vision.curation.load import get_dataset, load_source
    from vision.curation.predict import evaluate, predict

    labels = ["stripes", "blobs", "flat"]
    folder = make_tiny_folder(tmp_path / "tiny", per_class=6, size=32)
    bundle = curation_support.classification_bundle(tmp_path / "model", folder, labels)
    load_source(dsname, folder, "image_folder", name="tiny")
    ds = get_dataset(dsname)
    F = fo.ViewField
    flipped = ds.one(F("key") == "tiny:stripes/stripes_002.png")
    flipped["classification"].label = "flat"  # a label mistake made while annotating
    flipped.save()
    run = predict(ds, str(bundle), "cls")
    assert (run["task"], run["predicted"], run["labels"]) == ("classification", 18, labels)
    s = ds.first()
    assert len(s["cls"].logits) == 3 and 0 < s["cls"].confidence <= 1
    res = evaluate(ds, "cls", "ce")
    assert res["task"] == "classification" and res["correct"] + res["wrong"] == 18
    assert res["accuracy"] == pytest.approx(res["correct"] / 18) and res["accuracy"] >= 0.8
    assert ds.one(F("key") == "tiny:stripes/stripes_002.png")["ce"] is False
    mk = dict(zip(*ds.values(["key", "ce_mistakenness"])))
    assert max(mk, key=mk.get) == "tiny:stripes/stripes_002.png"
    assert {"ce_hardness", "ce_mistakenness"} <= set(ds.list_brain_runs())
    assert all(h is not None and h >= 0 for h in ds.values("ce_hardness"))
    assert "compute_hardness" in res["hardness"]["method"]


def test_reid_rank_lists_for_queries(fo, dsname, tmp_path):
    from vision.curation.load import get_dataset, load_source
    from vision.curation.predict import predict

    market = shared("market1501_mini")
    load_source(dsname, market, "market", name="market", card="market1501_mini")
    bundle = curation_support.reid_bundle(tmp_path / "model")
    out = predict(get_dataset(dsname), str(bundle), "reid", top_k=5)
    r = out["ranking"]
    assert (out["task"], r["queries"], r["gallery"]) == ("reid", 20, 20)
    assert r["valid_queries"] + len(r["invalid_queries"]) == 20 and r["valid_queries"] > 0
    assert 0.0 <= r["rank1"] <= r["rank5"] <= 1.0 and 0.0 < r["map"] <= 1.0
    ds = get_dataset(dsname)
    F = fo.ViewField
    by_key = {s["key"]: s for s in ds.iter_samples()}
    queries = ds.match(F("role") == "query")
    assert len(queries.exists("reid_ranks")) == 20 and not len(ds.match(F("role") != "query").exists("reid_ranks"))
    for q in queries.iter_samples():
        ranks = q["reid_ranks"]
        assert 0 < len(ranks) <= 5 and all(by_key[k]["role"] == "gallery" for k in ranks)
        assert not any(by_key[k]["identity"] == q["identity"] and by_key[k]["camera"] == q["camera"] for k in ranks)
        assert q["reid_rank_ids"] == [by_key[k]["identity"] for k in ranks]
        if q["reid_first_hit"] == 1:
            assert q["reid"].label == q["identity"] and q["reid_ap"] > 0
    assert "reid" in ds.list_brain_runs()
    near = ds.sort_by_similarity(queries.first().id, k=3, brain_key="reid")
    assert len(near) == 3


# -- the App ------------------------------------------------------------------------------------------
TAGGER = r"""
import json, sys
from vision.curation.db import import_fiftyone
fo = import_fiftyone()
fo.config.database_validation = False
ds = fo.load_dataset(sys.argv[1])
F = fo.ViewField
ds.match(F("key").is_in(["toy:scene_1.png", "toy:scene_2.png"])).tag_samples("reviewed")
ds.match(F("key") == "toy:scene_4.png").tag_samples("bad_label")
ds.match(F("key") == "toy:scene_2.png").select_labels(fields="ground_truth").limit_labels("ground_truth", 1) \
    .tag_labels("mislabelled", label_fields="ground_truth")
print("tagged")
"""


def test_app_serves_samples_in_chromium_and_tags_come_back(fo, dsname, tmp_path):
    from vision.curation.browser import check_app, find_chromium
    from vision.curation.load import load_source

    if find_chromium() is None:
        pytest.skip("no Chromium: install Debian's `chromium` package (apt-get install chromium) for the App test")
    coco, _ = _toy_coco(tmp_path)
    load_source(dsname, coco, name="toy")
    port = curation_support.free_port()
    ready = tmp_path / "app.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    app = subprocess.Popen([PY, "-m", "vision.curate", "action=app", f"dataset={dsname}", f"app.port={port}",
                            "app.address=127.0.0.1", f"app.ready_file={ready}",
                            f"app.log_file={tmp_path / 'server.log'}"],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ready.is_file():
            assert app.poll() is None, app.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the App did not start within 180 s"
            time.sleep(0.5)
        info = json.loads(ready.read_text())
        assert info["url"] == f"http://127.0.0.1:{port}/"
        shot = tmp_path / "app.png"
        seen = check_app(f"http://127.0.0.1:{port}/datasets/{dsname}", shot, expect_text=["6 samples"], min_media=6,
                         timeout=120)
        assert seen["found_text"]["6 samples"], seen["page_text"][:2000]
        assert seen["media_loaded"] >= 6 and not seen["server_errors"], seen
        assert all("scene_" in u for u in seen["media_urls"])
        assert shot.is_file() and shot.stat().st_size > 10_000
        with Image.open(shot) as im:
            assert im.size == (1400, 900) and np.asarray(im.convert("L")).std() > 5  # not a blank page

        # tags written by another client of the same database (what the App does), read back by the CLI
        tagger = subprocess.run([PY, "-c", TAGGER, dsname], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=120)
        assert tagger.returncode == 0, tagger.stderr[-2000:]
        rep = json_out(cli(tmp_path, "action=tags", f"dataset={dsname}", f"tags.output={tmp_path / 'tags.json'}"))
        assert rep["sample_tags"] == {"bad_label": 1, "reviewed": 2}
        assert rep["sample_tag_keys"] == {"bad_label": ["toy:scene_4.png"],
                                          "reviewed": ["toy:scene_1.png", "toy:scene_2.png"]}
        assert rep["label_tags"] == {"ground_truth": {"mislabelled": 1}}
        assert rep["label_tag_keys"]["ground_truth"] == {"mislabelled": {"toy:scene_2.png": 1}}
        assert json.loads((tmp_path / "tags.json").read_text())["sample_tags"] == rep["sample_tags"]
        snap = json_out(cli(tmp_path, "action=export-snapshot", f"dataset={dsname}", "snapshot.name=reviewed",
                            "snapshot.tags=[reviewed]"))
        assert snap["counts"]["samples"] == 2
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
    time.sleep(1.0)
    assert curation_support_server_gone(port)


def curation_support_server_gone(port: int) -> bool:
    from vision.curation.app_server import server_version

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server_version("127.0.0.1", port, timeout=1) is None:
            return True
        time.sleep(0.5)
    return False
