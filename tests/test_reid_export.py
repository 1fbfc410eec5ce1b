"""Re-id export and runtime: a tiny embedder trained on Market-1501 mini -> the export's embedding parity
gate (cosine + Market protocol through the runtime) and bundle; the torch-free Embedder; the multi-camera
tracker on a two-camera scene-engine sequence with ground-truth boxes (ids within a camera, one global id
across cameras, expiry after the TTL, nothing on disk unless asked); the tracking CLI on a real clip."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import PY, REPO, shared
from vision.runtime.bundle import BundleError, load_bundle

CLIP = "one-by-one-person-detection.mp4"
TRAIN = ["experiment=reid", "data=market1501_mini", "logger=none", "test_after_fit=false",
         "data.preprocess.size=[64,32]", "data.batch_size=8", "data.num_instances=2", "data.eval_batch_size=32",
         "model.width_mult=0.25", "model.embedding_dim=32", "trainer.max_epochs=4", "data.batches_per_epoch=6",
         "trainer.enable_progress_bar=false"]


def _export(ckpt: Path, out: Path, *overrides: str) -> Path:
    from hydra import compose, initialize_config_dir

    import vision.config  # noqa: F401 - resolvers
    from vision.export.pipeline import run

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("export", overrides=[f"checkpoint={ckpt}", f"output_dir={out}", "progress=false",
                                           "logger.log_to_run=false", "calibration.num_samples=64", *overrides])
        return run(cfg)


@pytest.fixture(scope="module")
def reid(tmp_path_factory) -> SimpleNamespace:
    """A tiny embedder trained a few dozen steps on Market-1501 mini, and its exported bundle."""
    import torch
    from hydra import compose, initialize_config_dir

    import vision.config  # noqa: F401 - resolvers
    from vision.training import run as train

    shared("market1501_mini")
    work = tmp_path_factory.mktemp("reid_export")
    threads = torch.get_num_threads()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TRAIN, "run_name=tiny", f"paths.output_dir={work / 'run'}",
                                          f"paths.cache_dir={work / 'cache'}"])
        train(cfg)
    torch.set_num_threads(threads)
    ckpt = work / "run" / "checkpoints" / "last.ckpt"
    bundle = _export(ckpt, work / "bundle")
    return SimpleNamespace(work=work, ckpt=ckpt, bundle=bundle)


def test_export_passes_the_gate_and_writes_a_verifiable_bundle(reid):
    b = load_bundle(reid.bundle)  # every checksum and the integrity hash verify
    doc = b.doc
    assert doc["task"] == "reid" and doc["labels"] == []
    assert doc["embedding"] == {"dim": 32, "normalized": True, "metric": "cosine"}
    assert doc["preprocess"]["size"] == [64, 32] and doc["preprocess"]["resize"] == "stretch"
    for p in ("fp32", "int8"):
        assert doc["models"][p]["outputs"] == ["embedding"] and doc["models"][p]["input"]["shape"] == [1, 3, 64, 32]
    parity = doc["parity"]
    assert parity["passed"] and parity["split"] == "test" and parity["num_queries"] > 0
    assert parity["onnx_fp32"]["mean_cosine"] >= 0.999 and parity["onnx_int8"]["mean_cosine"] >= 0.98
    assert parity["onnx_int8"]["rank1_drop"] <= 0.01 and parity["onnx_int8"]["map_drop"] <= 0.01
    assert parity["limits"]["min_cosine_fp32"] == 0.999 and parity["limits"]["min_cosine_int8"] == 0.98
    for k in ("torch", "onnx_fp32", "onnx_int8"):
        assert {"rank1", "map", "minp", "by_source"} <= set(parity[k])
        assert 0.0 <= parity[k]["rank1"] <= 1.0
    assert parity["torch"]["by_source"]["market1501_mini"]["num_queries"] == parity["num_queries"]
    cal = doc["calibration"]
    assert cal["split"] == "train" and cal["num_identities"] == doc["training_identities"]
    assert cal["images_per_identity"]["max"] - cal["images_per_identity"]["min"] <= 1  # identity-balanced
    assert "/embed/Conv" in cal["fp32_nodes"]  # the embedding layer stays in float
    assert doc["provenance"]["checkpoint"] == str(reid.ckpt)
    assert set(doc["metrics"]) == {"test_rank1", "test_map", "test_minp"}


def test_an_impossible_limit_refuses_and_writes_nothing(reid, tmp_path):
    from vision.errors import ParityError

    out = tmp_path / "refused"
    with pytest.raises(ParityError, match="int8 embeddings: mean cosine similarity") as e:
        _export(reid.ckpt, out, "parity.min_cosine_int8=1.01")
    assert "no bundle written" in str(e.value)
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ParityError, match="rank-1 drops"):
        _export(reid.ckpt, out, "parity.max_int8_drop=-0.5")
    assert not out.exists()


def test_embedder_is_torch_free_batches_and_matches_pytorch(reid, tmp_path):
    import torch

    from vision.checkpointing import load_checkpoint
    from vision.export.bundle_writer import write_bundle
    from vision.export.onnx_export import to_onnx
    from vision.export.pipeline import rebuild
    from vision.export.reid import raw_crop
    from vision.runtime.reid import Embedder

    model, dm, _ = rebuild(load_checkpoint(reid.ckpt))
    ds = dm.eval_dataset("test")
    idx = list(range(0, len(ds), max(1, len(ds) // 7)))[:7]
    crops = [raw_crop(ds, i) for i in idx]
    with torch.no_grad():
        ref = model(torch.stack([ds[i][0] for i in idx])).numpy()
    np.savez(tmp_path / "crops.npz", *crops)
    code = (f"import sys; sys.modules['torch'] = None\n"
            f"import numpy as np\n"
            f"import vision.runtime.track\n"
            f"from vision.runtime.reid import Embedder\n"
            f"z = np.load({str(tmp_path / 'crops.npz')!r}); crops = [z[k] for k in sorted(z, key=lambda k: int(k[4:]))]\n"
            f"out = {{p: Embedder({str(reid.bundle)!r}, p, threads=1).embed(crops) for p in ('fp32', 'int8')}}\n"
            f"np.savez({str(tmp_path / 'emb.npz')!r}, **out)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "['torch']", r.stderr  # only the blocker entry
    got = np.load(tmp_path / "emb.npz")
    for p, need in (("fp32", 0.999), ("int8", 0.98)):
        e = got[p]
        assert e.shape == (len(idx), 32) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
        cos = (e * ref).sum(1)
        assert cos.min() >= need, (p, cos)
    # a batch-3 graph: 7 crops = 3 + 3 + 1 padded, same embeddings as the batch-1 graph
    onnx = to_onnx(model, (3, 3, 64, 32), tmp_path / "b3.onnx", output_names=("embedding",))
    doc = {"task": "reid", "labels": [], "preprocess": dm.spec.to_dict(), "embedding": {"dim": 32, "metric": "cosine"},
           "models": {"fp32": {"file": "model_fp32.onnx", "outputs": ["embedding"]}}}
    b3 = Embedder(write_bundle(tmp_path / "b3", {"model_fp32.onnx": onnx}, doc), "fp32", threads=1)
    assert b3.batch == 3
    assert np.allclose(b3.embed(crops), got["fp32"], atol=1e-4)
    t = b3.timings()
    assert t["embeddings"] == 7 and t["embeddings_per_s"] > 0 and set(t["stages"]) == {"preprocess", "inference"}
    # bad input: an empty crop is named, a non-reid bundle is refused
    with pytest.raises(ValueError, match="crop 1: empty crop"):
        b3.embed([crops[0], np.zeros((0, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="box 0 .*empty crop"):
        b3.embed_boxes(crops[0], [[500, 500, 600, 600]])
    bad = write_bundle(tmp_path / "cls", {"model_fp32.onnx": onnx}, {**doc, "task": "classification"})
    with pytest.raises(BundleError, match=r"bundle\.json: a 'classification' bundle, not a re-identification"):
        Embedder(bad, "fp32")


# -- the tracker on a generated two-camera scene ------------------------------------------------------------
def _scene_frames():
    from synthetic.scene import Scene, SceneConfig

    scene = Scene(SceneConfig(seed=3, cameras=2, resolution=(320, 180), duration=30, fps=5.0, surface="pavement",
                              world_size=16.0, crowd_density=3.0, num_vehicles=0, randomize_per="sequence"))
    out = []
    for fr in scene.frames(with_mask=False):
        people = [o for o in fr.objects if o["category"] == "person" and o["bbox_visible"]
                  and o["visibility"] > 0.3 and o["pixel_height"] > 20]
        out.append((fr.camera, fr.time, fr.image, people))
    return out


class _Appearance:
    """Ground-truth appearance: a fixed random vector per identity plus per-detection noise (a perfect
    re-id model would give one cluster per person); ``swap`` gives a person another look in a camera."""

    def __init__(self, seed: int = 0, noise: float = 0.3, swap: tuple[int, int] | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.noise, self.swap = noise, swap
        self.protos: dict = {}

    def __call__(self, camera: int, people) -> np.ndarray:
        out = []
        for o in people:
            key = (o["identity"], camera) if self.swap == (o["identity"], camera) else o["identity"]
            if key not in self.protos:
                self.protos[key] = self.rng.normal(size=64)
            v = self.protos[key] + self.noise * self.rng.normal(size=64)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out).reshape(len(people), 64)


def _feed(mct, frames, appearance, offset: float):
    """Camera 1 then camera 2 (shifted ``offset`` s later: people walk from the first to the second)."""
    tracks, gids = collections.defaultdict(list), collections.defaultdict(set)
    for cam_id, shift in ((1, 0.0), (2, offset)):
        for cam, t, _, people in frames:
            if cam != cam_id:
                continue
            res = mct.update(f"cam{cam - 1}", t + shift, [o["bbox_visible"] for o in people],
                             embeddings=appearance(cam, people))
            for o, r in zip(people, res):
                tracks[(cam, o["identity"])].append((t, r["track_id"]))
                if r["global_id"]:
                    gids[o["identity"]].add(r["global_id"])
    return tracks, gids


def test_tracker_two_cameras_ids_transits_ttl_and_nothing_on_disk(tmp_path, monkeypatch):
    from vision.runtime.track import MultiCameraTracker

    monkeypatch.chdir(tmp_path)
    frames = _scene_frames()
    both = ({o["identity"] for c, _, _, p in frames if c == 1 for o in p}
            & {o["identity"] for c, _, _, p in frames if c == 2 for o in p})
    assert len(both) >= 3  # the two cameras look at the same square: most people are seen by both
    mct = MultiCameraTracker(ttl_s=60.0, sim_threshold=0.6)
    tracks, gids = _feed(mct, frames, _Appearance(), offset=11.0)
    # within a camera: one track per person (the ground-truth boxes are followed by motion + appearance)
    for (cam, ident), seq in tracks.items():
        assert len({tid for _, tid in seq}) == 1, (cam, ident, seq)
    # across cameras: one global id per person, different people never share one
    assert all(len(g) == 1 for g in gids.values()), gids
    flat = [next(iter(g)) for g in gids.values()]
    assert len(set(flat)) == len(flat)
    rep = mct.report()
    by_id = {g["global_id"]: g for g in rep["identities"]}
    crossed = [i for i in both if i in gids and set(by_id[next(iter(gids[i]))]["cameras"]) == {"cam0", "cam1"}]
    assert len(crossed) >= 3 and rep["multi_camera_identities"] == len(crossed)
    for i in crossed:
        g = by_id[next(iter(gids[i]))]
        (x,) = g["transits"]
        assert x["from"] == "cam0" and x["to"] == "cam1" and x["transit_s"] >= 0
        assert x["transit_s"] == pytest.approx(g["cameras"]["cam1"]["first_s"] - g["cameras"]["cam0"]["last_s"],
                                               abs=1e-3)
    assert rep["transits"]["cam0->cam1"]["count"] == len(crossed)
    assert "embedding" not in json.dumps(rep["identities"])
    # ids are random per run, not derived from appearance: the same input gives other ids
    _, gids2 = _feed(MultiCameraTracker(ttl_s=60.0), frames, _Appearance(), offset=11.0)
    assert not set(flat) & {next(iter(g)) for g in gids2.values()}
    # expiry: after ttl_s without a sighting every identity, track and embedding is gone from memory
    assert mct.memory()["embeddings"] > 0
    lasts = {g["global_id"]: g["last_s"] for g in rep["identities"]}
    first, last = min(lasts.values()), max(lasts.values())
    assert last - first > 2.0 and mct.purge(first + 59.0) == []
    early = mct.purge(first + 61.0)  # each identity expires ttl_s after its own last sighting
    assert early and set(early) == {k for k, v in lasts.items() if v < first + 1.0}
    assert mct.memory()["identities"] == len(lasts) - len(early)
    assert set(early) | set(mct.purge(last + 61.0)) == set(lasts)
    assert mct.memory() == {"identities": 0, "tracks": 0, "embeddings": 0}
    assert all(g["expired"] for g in mct.report()["identities"])
    # ... and a person coming back (same appearance) is a new identity
    cam, t, _, people = next(f for f in frames if f[0] == 1 and f[3])
    app = _Appearance()
    for k in range(2):
        res = mct.update("cam0", last + 62.0 + k * 0.2, [o["bbox_visible"] for o in people],
                         embeddings=app(cam, people))
    assert res[0]["global_id"] and res[0]["global_id"] not in set(flat)
    # nothing was written anywhere (the working directory is empty) until embeddings are asked for
    assert not list(tmp_path.iterdir())
    mct.save_embeddings(tmp_path / "emb.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npz"]
    assert set(np.load(tmp_path / "emb.npz")) == {r["global_id"] for r in res}


def test_tracker_different_appearance_or_transit_gets_a_new_identity():
    from vision.runtime.track import MultiCameraTracker

    frames = _scene_frames()
    mct = MultiCameraTracker(ttl_s=60.0, seed=1)
    _, gids = _feed(mct, frames, _Appearance(), offset=11.0)
    cams = {g["global_id"]: set(g["cameras"]) for g in mct.report()["identities"]}
    crossed = sorted(i for i, g in gids.items() if cams[next(iter(g))] == {"cam0", "cam1"})
    assert len(crossed) >= 3
    # the same person with another look in camera 2: not matched to its camera-1 identity
    mct = MultiCameraTracker(ttl_s=60.0, seed=1)
    _, gids = _feed(mct, frames, _Appearance(swap=(crossed[0], 2)), offset=11.0)
    assert len(gids[crossed[0]]) == 2 and all(len(gids[i]) == 1 for i in crossed[1:])
    # an implausible transit (shorter than min_transit_s) is never matched either
    mct = MultiCameraTracker(ttl_s=60.0, seed=1, min_transit_s=30.0)
    _, gids = _feed(mct, frames, _Appearance(), offset=11.0)
    assert mct.report()["transits"] == {} and all(len(gids[i]) == 2 for i in crossed)


def test_tracker_with_the_runtime_embedder_on_frames(reid):
    from vision.runtime.reid import Embedder
    from vision.runtime.track import MultiCameraTracker

    emb = Embedder(reid.bundle, "int8", threads=1)
    mct = MultiCameraTracker(embedder=emb, seed=0)
    n = 0
    for cam, t, rgb, people in _scene_frames()[:12]:
        res = mct.update(f"cam{cam - 1}", t, [o["bbox_visible"] for o in people], frame=rgb)
        n += len(res)
    assert emb.timings()["embeddings"] == n > 0
    assert mct.report()["num_identities"] > 0


# -- the CLI on a real clip ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det_bundle(tmp_path_factory) -> Path:
    """A tiny (untrained) edge detector bundle: it finds 'people' everywhere (score threshold 0), which is
    all the tracking CLI needs to exercise detection -> embedding -> tracking on real frames."""
    import torch

    from vision.export.bundle_writer import write_bundle
    from vision.export.onnx_export import to_onnx
    from vision.models.detector import build_detector
    from vision.runtime.preprocess import PreprocessSpec

    torch.manual_seed(0)
    size = (96, 160)
    tmp = tmp_path_factory.mktemp("det")
    model = build_detector("resnet18", num_classes=1, width_mult=0.25, input_size=size).eval()
    onnx = to_onnx(model, (1, 3, *size), tmp / "m.onnx", output_names=("cls_logits", "box_ltrb", "quality"))
    doc = {"task": "detection", "labels": ["person"],
           "preprocess": PreprocessSpec(size=size, resize="letterbox").to_dict(),
           "decode": {"input_size": list(size), "strides": [8, 16, 32], "score_threshold": 0.0, "nms_iou": 0.5,
                      "max_detections": 6, "class_agnostic": True, "pre_nms_topk": 200},
           "models": {"fp32": {"file": "model_fp32.onnx", "outputs": ["cls_logits", "box_ltrb", "quality"],
                               "input": {"name": "input", "shape": [1, 3, *size], "dtype": "float32"}}}}
    return write_bundle(tmp / "bundle", {"model_fp32.onnx": onnx}, doc)


def test_track_cli_on_a_real_clip(reid, det_bundle, tmp_path):
    import cv2

    clip = shared("clip") / CLIP
    if not clip.is_file():
        pytest.skip(f"{clip} is absent")
    out, report = tmp_path / "tracks.jsonl", tmp_path / "report.json"
    base = [sys.executable, "-m", "vision.runtime.track", "--detector", str(det_bundle), "--embedder", str(reid.bundle),
            "--camera", f"cam0={clip}", "--camera", f"cam1={clip}", "--max-frames", "4", "--every", "5",
            "--precision", "fp32", "--embedder-precision", "int8", "--threads", "2", "--ttl-s", "30"]
    r = subprocess.run([*base, "--out", str(out), "--report", str(report)], cwd=REPO, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["camera"], x["frame"]) for x in recs] == [(c, f) for f in (0, 5, 10, 15) for c in ("cam0", "cam1")]
    assert all(x["tracks"] and set(x["tracks"][0]) == {"track_id", "global_id", "box", "score"} for x in recs)
    rep = json.loads(report.read_text())
    assert set(rep["cameras"]) == {"cam0", "cam1"} and rep["cameras"]["cam0"]["frames"] == 4
    assert rep["num_identities"] > 0 and rep["records"] == 8
    assert rep["privacy"] == {"ttl_s": 30.0, "random_ids": True, "embeddings_saved": False, "crops_saved": False}
    assert rep["timings"]["embedder"]["embeddings"] == sum(len(x["tracks"]) for x in recs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "tracks.jsonl"]  # nothing else on disk
    # asked for: embeddings and annotated videos
    r = subprocess.run([*base, "--out", str(tmp_path / "t2.jsonl"), "--report", str(tmp_path / "r2.json"),
                        "--save-embeddings", str(tmp_path / "emb.npz"), "--video-out-dir", str(tmp_path / "videos")],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    live = {g["global_id"] for g in json.loads((tmp_path / "r2.json").read_text())["identities"] if not g["expired"]}
    assert set(np.load(tmp_path / "emb.npz")) == live
    for cam in ("cam0", "cam1"):
        cap = cv2.VideoCapture(str(tmp_path / "videos" / f"{cam}.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        cap.release()


def test_track_cli_bad_inputs_name_the_file(reid, det_bundle, tmp_path, capsys):
    from vision.runtime.track import main

    clip = tmp_path / "ok.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 4096).astype(np.uint8).tobytes())
    import cv2

    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for _ in range(3):
        w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    out, rep = tmp_path / "t.jsonl", tmp_path / "r.json"
    common = ["--out", str(out), "--report", str(rep), "--precision", "fp32"]
    cases = [
        (["--detector", str(reid.bundle), "--embedder", str(reid.bundle), "--camera", f"a={clip}"],
         f"{reid.bundle / 'bundle.json'}: --detector needs a detection bundle, this one is 'reid'"),
        (["--detector", str(det_bundle), "--embedder", str(det_bundle), "--camera", f"a={clip}"],
         f"{det_bundle / 'bundle.json'}: --embedder needs a re-identification (reid) bundle"),
        (["--detector", str(det_bundle), "--embedder", str(reid.bundle), "--camera", f"a={clip}",
          "--camera", f"b={broken}"], "broken.mp4: cannot open video"),
        (["--detector", str(det_bundle), "--embedder", str(reid.bundle), "--camera", f"a={tmp_path / 'no.mp4'}"],
         "no.mp4: input not found"),
        (["--detector", str(tmp_path / "nothere"), "--embedder", str(reid.bundle), "--camera", f"a={clip}"],
         "nothere/bundle.json: not found"),
        (["--detector", str(det_bundle), "--embedder", str(reid.bundle), "--camera", str(clip)],
         "expected NAME=VIDEO"),
    ]
    for args, msg in cases:
        assert main([*args, *common]) == 2, msg
        err = capsys.readouterr().err
        assert msg in err, err
        assert not out.exists() and not rep.exists()


def test_runtime_cli_ranks_gallery_crops_for_queries(reid, tmp_path):
    """``python -m vision.runtime REID_BUNDLE GALLERY --query Q``: rank lists; embeddings only on request."""
    import shutil

    root = shared("market1501_mini")
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    files = sorted((root / "bounding_box_test").glob("*.jpg"))[:12]
    for f in files:
        shutil.copy(f, gallery / f.name)
    (gallery / "broken.jpg").write_bytes(b"not an image")
    query = gallery / files[3].name  # a query that is also in the gallery matches itself first

    def cli(*args):
        return subprocess.run([PY, "-m", "vision.runtime", str(reid.bundle), *args], capture_output=True, text=True,
                              cwd=REPO, timeout=300)

    out = tmp_path / "ranks.jsonl"
    proc = cli(str(gallery), "--query", str(query), "--top-k", "5", "--out", str(out))
    assert proc.returncode == 1, proc.stderr  # the broken crop is reported, and makes the exit code non-zero
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in recs if "error" in r] == [str(gallery / "broken.jpg")]
    ranks = [r for r in recs if "matches" in r]
    assert len(ranks) == 1 and len(ranks[0]["matches"]) == 5
    first = ranks[0]["matches"][0]
    assert first["file"] == str(query) and first["distance"] < 1e-3
    d = [m["distance"] for m in ranks[0]["matches"]]
    assert d == sorted(d)
    assert not any("embedding" in r for r in recs), "embeddings were written without --save-embeddings"

    emb = tmp_path / "emb.jsonl"
    assert cli(str(files[0]), str(files[1]), "--save-embeddings", "--out", str(emb)).returncode == 0
    vecs = [json.loads(line)["embedding"] for line in emb.read_text().splitlines()]
    assert len(vecs) == 2 and abs(sum(v * v for v in vecs[0]) - 1.0) < 1e-3

    none = cli(str(gallery))
    assert none.returncode == 2 and "--query" in none.stderr
    wrong = cli(str(gallery), "--query", str(query), "--privacy")
    assert wrong.returncode == 2 and "apply only to detection bundles" in wrong.stderr
