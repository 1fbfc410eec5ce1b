"""Tests of the procedural multi-camera scene simulator (synthetic.scene): geometry, labels, determinism,
writers (COCO / MOT / Market-1501) and their atomicity, camera faults (labels under them) and collision
avoidance. Small resolutions and few frames: each test is fast."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthetic.scene import (
    CAMERA_FAULTS,
    FAULT_LABEL_RULES,
    Camera,
    Light,
    Person,
    PersonLook,
    Scene,
    SceneConfig,
    Trajectory,
    World,
    apply_defocus,
    apply_exposure,
    apply_fog,
    apply_glare,
    apply_jpeg,
    apply_motion_blur,
    apply_night_ir,
    apply_rain,
    apply_sensor_noise,
    apply_snow,
    footprint_radius,
    obstacle_boxes,
    render_frame,
    write_coco,
    write_dataset,
    write_mot,
    write_reid,
)
from synthetic.scene import writers as scene_writers
from synthetic.scene.crowd import MAX_NEIGHBOURS, box_signed_distance, plan_route
from synthetic.scene.randomize import DEFAULT_RANGES, validate_ranges
from synthetic.scene.writers import parse_market_name

REPO = Path(__file__).resolve().parents[1]
SMALL = (320, 180)
CLEAR = {"rain_prob": 0.0, "snow_prob": 0.0, "fog_prob": 0.0, "motion_blur_prob": 0.0, "defocus_prob": 0.0}


def _look(shirt=(200, 30, 30), height=1.75) -> PersonLook:
    return PersonLook(height, 1.0, 1.0, shirt, (0, 0, 0), "plain", (30, 30, 90), (200, 160, 130), (30, 20, 10),
                      "short", (20, 20, 20), False, "none", (0, 0, 0))


def _standing(ident, x, y, heading=180.0, **kw) -> Person:
    return Person(ident, _look(**kw), Trajectory([(x, y)], speed=0.0, heading=heading))


def _small_config(**kw) -> SceneConfig:
    base = dict(seed=7, cameras=2, resolution=SMALL, duration=3, fps=2.0, surface="road", crowd_density=6.0,
                num_vehicles=2)
    base.update(kw)
    return SceneConfig(**base)


def _empty_world(size=200.0, props=None) -> World:
    return World("pavement", size, np.random.default_rng(0), props=props if props is not None else {})


# --------------------------------------------------------------------------- geometry
def test_projection_round_trip_with_distortion():
    cam = Camera(x=1.0, y=-2.0, height=6.0, yaw=30.0, tilt=25.0, hfov=70.0, resolution=(640, 360), k1=-0.12,
                 k2=0.01, roll=1.5).validate()
    g = np.random.default_rng(0).uniform(-1, 1, (200, 2))
    fwd = np.array([np.cos(np.radians(30)), np.sin(np.radians(30))])
    pts = np.array([1.0, -2.0]) + (8 + 10 * (g[:, :1] + 1)) * fwd + 5 * g[:, 1:] * fwd[::-1] * [-1, 1]
    P = np.concatenate([pts, np.zeros((len(pts), 1))], 1)
    uv, depth = cam.project(P)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 640) & (uv[:, 1] >= 0) & (uv[:, 1] < 360) & (depth > 0)
    assert inside.sum() > 50
    back = cam.ground_point(uv[inside, 0], uv[inside, 1])
    np.testing.assert_allclose(back, pts[inside], atol=1e-5)
    # scalar API and the horizon
    u, v = uv[inside][0]
    assert cam.ground_point(float(u), float(v)) == pytest.approx(tuple(pts[inside][0]), abs=1e-5)
    assert cam.ground_point(320.0, 0.0) is None or Camera(tilt=80.0).ground_point(320.0, 0.0) is not None
    # without distortion the projection matrix agrees with project()
    cam0 = Camera(x=1.0, y=-2.0, height=6.0, yaw=30.0, tilt=25.0, hfov=70.0)
    uv0, _ = cam0.project(P)
    h = np.concatenate([P, np.ones((len(P), 1))], 1) @ cam0.P.T
    np.testing.assert_allclose(h[:, :2] / h[:, 2:], uv0, atol=1e-6)
    assert cam0.K.shape == (3, 3) and cam0.extrinsics.shape == (3, 4)
    np.testing.assert_allclose(cam0.R @ cam0.R.T, np.eye(3), atol=1e-12)
    assert Camera.from_dict(cam.to_dict()) == cam


def _pixel_heights(cam: Camera, distances, world=None) -> list:
    world = world or _empty_world()
    out = []
    ax = np.array([np.cos(np.radians(cam.yaw)), np.sin(np.radians(cam.yaw))])
    for d in distances:
        x, y = np.array([cam.x, cam.y]) + d * ax
        r = render_frame(world, cam, [_standing(1, x, y)], [], 0.0, Light())
        assert len(r.objects) == 1, d
        out.append(r.objects[0])
    return out


def test_pixel_height_decreases_with_distance_and_spans_300_to_30_px():
    world = _empty_world()
    wide = Camera(x=-90.0, y=0.0, height=6.0, yaw=0.0, tilt=12.0, hfov=60.0, resolution=(640, 360))
    dists = [12, 15, 20, 30, 45, 70, 100]
    objs = _pixel_heights(wide, dists, world)
    hs = [o["pixel_height"] for o in objs]
    assert all(a > b for a, b in zip(hs, hs[1:])), hs
    assert all(o["truncation"] == 0.0 for o in objs)
    assert hs[-1] < 30
    # pinhole scale: height ~ f * 1.75 m / distance far away
    assert hs[-1] == pytest.approx(wide.fx * 1.75 / 100.0, abs=1.5)  # (+ up to 1 px of rasterisation)
    # from a 6 m mount a 1.75 m person subtends at most ~10 degrees (at ~5 m), so > 300 px on a 360-px-high
    # image needs a narrow (telephoto) lens on the same mount (or a 1080p sensor)
    tele = Camera(x=-90.0, y=0.0, height=6.0, yaw=0.0, tilt=42.0, hfov=20.0, resolution=(640, 360))
    near = _pixel_heights(tele, [5.0, 6.0, 7.0], world)
    hs = [o["pixel_height"] for o in near]
    assert all(a > b for a, b in zip(hs, hs[1:])) and hs[1] > 300
    assert near[1]["truncation"] < 0.2


# --------------------------------------------------------------------------- occlusion labels
def test_visible_fraction_drops_behind_a_prop():
    # a person walks across the view, passing behind a pillar standing between it and the camera
    world = _empty_world(60.0, props=[{"kind": "pillar", "x": -4.0, "y": 0.0, "size": 4.0}])
    cam = Camera(x=-12.0, y=0.0, height=3.0, yaw=0.0, tilt=8.0, hfov=50.0, resolution=SMALL)
    walker = Person(1, _look(), Trajectory([(0.0, -5.0), (0.0, 5.0)], speed=1.0, mode="wrap"))
    fr = {}
    for t in (0.5, 4.75, 5.0):  # y = -4.5 (clear view), -0.25 (partly hidden), 0 (right behind the pillar)
        objs = render_frame(world, cam, [walker], [], t, Light()).objects
        assert len(objs) == 1
        fr[t] = objs[0]
    assert fr[0.5]["visible_fraction"] == pytest.approx(1.0)
    assert 0.0 < fr[4.75]["visible_fraction"] < 0.5
    a, v = fr[4.75]["bbox_amodal"], fr[4.75]["bbox_visible"]
    assert (v[2] - v[0]) < (a[2] - a[0]) / 2  # visible box narrower than the amodal one
    # fully hidden: still labelled (amodal box, fraction 0) but without a visible box
    assert fr[5.0]["visible_fraction"] == 0.0 and fr[5.0]["bbox_visible"] is None


def test_visible_fraction_drops_behind_another_person():
    world = _empty_world(60.0)
    cam = Camera(x=-12.0, y=0.0, height=3.0, yaw=0.0, tilt=8.0, hfov=50.0, resolution=SMALL)
    near, far = _standing(1, -2.0, 0.0), _standing(2, 2.0, 0.0, shirt=(30, 200, 30))
    r = render_frame(world, cam, [far, near], [], 0.0, Light())
    o = {x["identity"]: x for x in r.objects}
    assert o[1]["visible_fraction"] == pytest.approx(1.0)
    assert o[2]["visible_fraction"] < 0.6
    alone = render_frame(world, cam, [far], [], 0.0, Light()).objects[0]
    assert alone["visible_fraction"] == pytest.approx(1.0)
    assert o[2]["visible_pixels"] < alone["visible_pixels"]
    # the instance mask holds exactly the visible pixels of each agent
    assert int((r.mask == 2).sum()) == o[2]["visible_pixels"]


def test_truncation_at_the_image_border():
    world = _empty_world(60.0)
    cam = Camera(x=-12.0, y=0.0, height=3.0, yaw=0.0, tilt=8.0, hfov=50.0, resolution=SMALL)
    half_fov_y = np.tan(np.radians(25.0)) * 12.0  # lateral offset of the right image border at 12 m
    r = render_frame(world, cam, [_standing(1, 0.0, -half_fov_y)], [], 0.0, Light())
    o = r.objects[0]
    assert 0.3 < o["truncation"] < 0.7
    assert o["bbox_visible"][2] <= SMALL[0] and o["visibility"] < o["visible_fraction"] + 1e-9


# --------------------------------------------------------------------------- scene / determinism
def _digest(frames) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(f.image.tobytes())
        h.update(f.mask.tobytes())
        h.update(json.dumps([f.camera, f.index, f.objects, f.params], sort_keys=True).encode())
    return h.hexdigest()


def test_frames_labels_and_params():
    sc = Scene(_small_config(randomization={"time_of_day": "night", "night_ir_prob": 0.0}))
    frames = list(sc.frames())
    assert len(frames) == len(sc) == 6
    assert [(f.camera, f.index) for f in frames[:3]] == [(1, 0), (2, 0), (1, 1)]
    seen = set()
    for f in frames:
        assert f.image.shape == (SMALL[1], SMALL[0], 3) and f.image.dtype == np.uint8
        assert f.mask.dtype == np.int32 and f.mask.shape == f.image.shape[:2]
        json.dumps(f.params)
        assert f.params["time_of_day"] == "night" and f.params["camera"] == f.camera
        for o in f.objects:
            assert o["category"] in ("person", "car", "van", "bike")
            assert 0.0 <= o["visible_fraction"] <= 1.0 and 0.0 <= o["truncation"] < 1.0
            seen.add(o["identity"])
    ids = {a.identity for a in sc.agents}
    assert seen and seen <= ids
    assert len(ids) == len(sc.agents)


def test_bit_exact_determinism_across_processes_and_seeds():
    cfg = _small_config(duration=2)
    d1 = _digest(Scene(cfg).frames())
    d2 = _digest(Scene(_small_config(duration=2)).frames())
    assert d1 == d2
    code = ("import sys; sys.path.insert(0, %r); from tests.test_scene_engine import _digest, _small_config; "
            "from synthetic.scene import Scene; print(_digest(Scene(_small_config(duration=2)).frames()))"
            % str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == d1
    assert _digest(Scene(_small_config(duration=2, seed=8)).frames()) != d1


def test_byte_identical_dataset_output(tmp_path):
    a = write_dataset(_small_config(duration=2), tmp_path / "a")
    b = write_dataset(_small_config(duration=2), tmp_path / "b")
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb and len(fa) > 10
    for rel in fa:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    import yaml
    card = yaml.safe_load((a / "card.yaml").read_text())
    assert card["licence"] == "generated" and card["config"]["seed"] == 7
    assert card["sha256"]["provenance.jsonl"] == hashlib.sha256((a / "provenance.jsonl").read_bytes()).hexdigest()
    lines = [json.loads(x) for x in (a / "provenance.jsonl").read_text().splitlines()]
    files = {p.as_posix() for p in fa if p.suffix == ".jpg"}
    assert {rec["file"] for rec in lines} == files
    rec = lines[0]
    assert rec["generator"] == "synthetic.scene" and rec["licence"] == "generated" and rec["seed"] == 7
    from synthetic import __version__
    assert rec["generator_version"] == __version__ and "params" in rec and "camera" in rec and "frame" in rec


# --------------------------------------------------------------------------- writers
def test_coco_output_loads_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    out = write_coco(_small_config(), tmp_path / "coco")
    coco = COCO(str(out / "annotations.json"))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"person", "car", "van", "bike"}
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) > 10
    for img in coco.loadImgs(coco.getImgIds()):
        assert (out / img["file_name"]).is_file()
        assert img["file_name"].startswith(f"images/cam{img['camera']:02d}/")
        assert isinstance(img["params"], dict)
    for a in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(a["image_id"])[0]
        x, y, w, h = a["bbox"]
        assert w >= 1 and h >= 1 and a["area"] > 0
        assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert 0 < a["visible_fraction"] <= 1 and a["iscrowd"] == 0
        for k in ("identity", "camera", "truncation", "pixel_height", "amodal_bbox"):
            assert k in a
        ax, ay, aw, ah = a["amodal_bbox"]
        assert ax <= x + 1 and ay <= y + 1 and ax + aw >= x + w - 1 and ay + ah >= y + h - 1
    im = cv2.imread(str(out / coco.loadImgs(1)[0]["file_name"]))
    assert im.shape == (SMALL[1], SMALL[0], 3)


def test_mot_ids_persist_across_frames(tmp_path):
    out = write_mot(_small_config(duration=5, fps=5.0), tmp_path / "mot")
    for cam in ("cam01", "cam02"):
        rows = np.loadtxt(out / cam / "gt" / "gt.txt", delimiter=",", ndmin=2)
        assert rows.shape[1] == 9
        frames_per_id = {}
        for r in rows:
            frames_per_id.setdefault(int(r[1]), set()).add(int(r[0]))
        assert max(len(v) for v in frames_per_id.values()) == 5  # someone is tracked through every frame
        assert rows[:, 0].min() == 1 and rows[:, 0].max() == 5
        assert set(rows[:, 6]) == {1.0} and ((rows[:, 8] >= 0) & (rows[:, 8] <= 1)).all()
        assert len(list((out / cam / "img1").glob("*.jpg"))) == 5
        ini = (out / cam / "seqinfo.ini").read_text()
        assert "seqLength=5" in ini and "imWidth=320" in ini and "imDir=img1" in ini
    ids1 = set(np.loadtxt(out / "cam01" / "gt" / "gt.txt", delimiter=",", ndmin=2)[:, 1].astype(int))
    ids2 = set(np.loadtxt(out / "cam02" / "gt" / "gt.txt", delimiter=",", ndmin=2)[:, 1].astype(int))
    assert ids1 & ids2  # the same identities seen by both cameras


def test_market1501_names_and_disjoint_identity_split(tmp_path):
    cams = [{"x": -10.0, "y": 0.0, "height": 3.0, "yaw": 0.0, "tilt": 10.0, "hfov": 50.0},
            {"x": 0.0, "y": -10.0, "height": 3.0, "yaw": 90.0, "tilt": 10.0, "hfov": 50.0}]
    cfg = SceneConfig(seed=3, cameras=cams, resolution=(480, 270), duration=4, fps=1.0, surface="pavement",
                      world_size=22.0, crowd_density=2.5, num_vehicles=0, props={}, randomization=CLEAR)
    out = write_reid(cfg, tmp_path / "reid")
    parsed = {}
    for d in ("bounding_box_train", "bounding_box_test", "query"):
        parsed[d] = [parse_market_name(p.name) for p in sorted((out / d).glob("*.jpg"))]
        for p in list((out / d).glob("*.jpg"))[:5]:
            assert cv2.imread(str(p)).shape == (256, 128, 3)
            pid, cam, frame, n = parse_market_name(p.name)
            assert p.name == f"{pid:04d}_c{cam}s1_{frame:06d}_{n:02d}.jpg"
    train = {p[0] for p in parsed["bounding_box_train"]}
    test = {p[0] for p in parsed["bounding_box_test"]}
    query = {p[0] for p in parsed["query"]}
    assert train and test and query
    assert not train & (test | query)
    assert query <= test
    # one query per identity and camera, each with a gallery image from another camera
    qkeys = [(p[0], p[1]) for p in parsed["query"]]
    assert len(qkeys) == len(set(qkeys))
    for pid, cam in qkeys:
        assert any(g[0] == pid and g[1] != cam for g in parsed["bounding_box_test"])
    cams_of = {}
    for p in parsed["bounding_box_train"] + parsed["bounding_box_test"]:
        cams_of.setdefault(p[0], set()).add(p[1])
    assert any(len(c) > 1 for c in cams_of.values())  # identities shared across cameras


# --------------------------------------------------------------------------- validation / safety
@pytest.mark.parametrize("kw, name", [
    ({"cameras": [{"height": -3.0}]}, "cameras[0].height"),
    ({"cameras": [{"height": 1.0}]}, "cameras[0].height"),
    ({"cameras": [{"tilt": 95.0}]}, "cameras[0].tilt"),
    ({"cameras": [{"hfov": 5.0}]}, "cameras[0].hfov"),
    ({"resolution": (0, 0)}, "resolution"),
    ({"cameras": [{"resolution": (0, 0)}]}, "cameras[0].resolution"),
    ({"crowd_density": -1.0}, "crowd_density"),
    ({"surface": "lava"}, "surface"),
    ({"duration": 0}, "duration"),
    ({"randomization": {"rain_prob": 2.0}}, "randomization.rain_prob"),
    ({"randomization": {"no_such_thing": 1}}, "randomization.no_such_thing"),
    ({"props": {"pole": -1}}, "props"),
    ({"surface": "indoor", "num_vehicles": 2}, "num_vehicles"),
    ({"randomization": {"camera_fault_prob": 1.5}}, "randomization.camera_fault_prob"),
    ({"randomization": {"camera_fault_prob": -0.1}}, "randomization.camera_fault_prob"),
    ({"randomization": {"camera_fault_prob": "often"}}, "randomization.camera_fault_prob"),
    ({"randomization": {"camera_faults": ["smoke"]}}, "randomization.camera_faults"),
    ({"randomization": {"camera_faults": "lens_flare"}}, "randomization.camera_faults"),
    ({"randomization": {"camera_faults": []}}, "randomization.camera_faults"),
    ({"randomization": {"camera_faults": {"covered": -1.0}}}, "randomization.camera_faults"),
    ({"randomization": {"camera_faults": {"covered": 0.0}}}, "randomization.camera_faults"),
    ({"randomization": {"camera_faults": 3}}, "randomization.camera_faults"),
    ({"collision_avoidance": "yes"}, "collision_avoidance"),
])
def test_invalid_config_raises_naming_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        SceneConfig(**kw).validate()


def test_camera_validate_messages():
    with pytest.raises(ValueError, match="height"):
        Camera(height=-1.0).validate()
    with pytest.raises(ValueError, match="tilt"):
        Camera(tilt=95.0).validate()
    with pytest.raises(ValueError, match="resolution"):
        Camera(resolution=(0, 0)).validate()
    with pytest.raises(ValueError, match="hfov"):
        Camera(hfov=170.0).validate()


def test_background_folder(tmp_path):
    empty = tmp_path / "empty_bg"
    empty.mkdir()
    with pytest.raises(ValueError, match="background_dir.*empty_bg"):
        SceneConfig(background_dir=str(empty)).validate()
    with pytest.raises(ValueError, match="background_dir"):
        Scene(SceneConfig(background_dir=str(tmp_path / "missing")))
    full = tmp_path / "bg"
    full.mkdir()
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (100, 1, 3))
    cv2.imwrite(str(full / "a.png"), ramp)
    f = Scene(_small_config(background_dir=str(full), duration=1, cameras=1, randomization={
        "time_of_day": "day", **CLEAR})).render(0, 0)
    assert f.image.shape == (SMALL[1], SMALL[0], 3)
    # the photo's left-to-right ramp shows through the background
    bg = f.mask == 0
    left = f.image[:, :40][bg[:, :40]].mean()
    right = f.image[:, -40:][bg[:, -40:]].mean()
    assert right > left + 60


def test_unwritable_output_raises_before_generation(tmp_path, monkeypatch):
    calls = []
    real = Scene.render
    monkeypatch.setattr(Scene, "render", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root ignores permission bits: emulate a read-only parent
            monkeypatch.setattr(scene_writers.os, "access", lambda p, mode: Path(p) != parent)
        with pytest.raises(PermissionError, match="not writable"):
            write_coco(_small_config(), parent / "out")
    finally:
        parent.chmod(0o755)
    assert not calls and list(parent.iterdir()) == []
    # a parent that is a file cannot hold the output either
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        write_coco(_small_config(), f / "out")
    assert not calls
    # an existing output folder is never overwritten
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        write_coco(_small_config(), tmp_path / "exists")
    assert not calls
    # an invalid config fails before anything is created
    with pytest.raises(ValueError):
        write_coco(SceneConfig(resolution=(0, 0)), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_no_output(tmp_path, monkeypatch, exc):
    real = Scene.render
    n = []

    def flaky(self, *a, **k):
        n.append(1)
        if len(n) == 3:
            raise exc("interrupted")
        return real(self, *a, **k)

    monkeypatch.setattr(Scene, "render", flaky)
    with pytest.raises(exc):
        write_dataset(_small_config(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- effects
@pytest.mark.parametrize("fn, kw", [
    (apply_rain, {}), (apply_snow, {}), (apply_fog, {"depth": True}), (apply_night_ir, {"depth": True}),
    (apply_exposure, {}), (apply_defocus, {}), (apply_motion_blur, {}), (apply_sensor_noise, {}),
    (apply_jpeg, {}), (apply_glare, {"lights": [(50.0, 40.0, 3.0)]}),
])
def test_effects_compose_and_are_deterministic(fn, kw):
    rng0 = np.random.default_rng(1)
    img = rng0.integers(0, 255, (90, 160, 3)).astype(np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 2)
    if kw.get("depth"):
        kw = {**kw, "depth": np.tile(np.linspace(80, 3, 90, dtype=np.float32)[:, None], (1, 160))}
    strength = {apply_motion_blur: 6.0, apply_defocus: 4.0}.get(fn, 0.8)
    a = fn(img.copy(), np.random.default_rng(5), strength, **kw)
    b = fn(img.copy(), np.random.default_rng(5), strength, **kw)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, img)


def test_config_round_trip_sequence_mode_and_dense_crowd():
    cfg = _small_config(randomize_per="sequence", props={"pole": 1, "bench": 2, "parked_vehicle": 1},
                        camera_ranges={"height": [5.0, 6.0]}, randomization={"time_of_day": ["day", "dusk"]})
    assert SceneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    sc = Scene(cfg)
    assert all(5.0 <= c.height <= 6.0 for c in sc.cameras)
    assert sum(v.parked for v in sc.vehicles) == 1
    p0, p1 = sc.frame_params(0, 0), sc.frame_params(0, 1)
    assert p0 == p1 and p0["time_of_day"] in ("day", "dusk")  # one draw per camera sequence
    assert sc.frame_params(1, 0) != p0
    # denser crowds: more people, more mutual occlusion
    def mean_vf(density):
        s = Scene(SceneConfig(seed=2, cameras=[{"x": -5.0, "y": -5.0, "height": 5.0, "yaw": 45.0, "tilt": 35.0}],
                              resolution=SMALL, duration=1, surface="pavement", world_size=12.0,
                              crowd_density=density, num_vehicles=0, props={}, randomization=CLEAR))
        objs = [o for o in s.render(0, 0).objects if o["category"] == "person"]
        return len(s.people), float(np.mean([o["visible_fraction"] for o in objs]))
    n_sparse, vf_sparse = mean_vf(5.0)
    n_dense, vf_dense = mean_vf(150.0)
    assert n_dense > 100 > n_sparse and vf_dense < vf_sparse - 0.2


# --------------------------------------------------------------------------- camera faults
def _fault_config(faults, prob=1.0, **kw) -> SceneConfig:
    return _small_config(randomization={**CLEAR, "camera_fault_prob": prob, "camera_faults": faults}, **kw)


def _by_id(objs) -> dict:
    return {o["identity"]: o for o in objs}


def test_camera_fault_ranges_default_off_and_normalised():
    assert DEFAULT_RANGES["camera_fault_prob"] == 0.0
    assert tuple(DEFAULT_RANGES["camera_faults"]) == CAMERA_FAULTS
    r = validate_ranges({})
    assert r["camera_faults"] == {f: 1.0 for f in CAMERA_FAULTS}
    r = validate_ranges({"camera_fault_prob": 0.3, "camera_faults": "covered"})
    assert r["camera_fault_prob"] == 0.3 and r["camera_faults"]["covered"] == 1.0
    assert sum(r["camera_faults"].values()) == 1.0
    r = validate_ranges({"camera_faults": {"too_dark": 2, "dirty_lens": 1}})
    assert r["camera_faults"]["too_dark"] == 2.0 and r["camera_faults"]["defocused"] == 0.0
    sc = Scene(_small_config(duration=2))
    for f in sc.frames():
        assert f.params["camera_fault"] == "none"
        assert not any(k.startswith("camera_fault_") for k in f.params)


def test_camera_faults_recorded_per_frame_and_other_frames_unchanged():
    faulty = Scene(_fault_config(list(CAMERA_FAULTS), prob=0.6, duration=4))
    clean = Scene(_small_config(randomization=CLEAR, duration=4))
    kinds = set()
    for f in faulty.frames():
        kind = f.params["camera_fault"]
        kinds.add(kind)
        assert kind in ("none",) + CAMERA_FAULTS
        json.dumps(f.params)
        g = clean.render(f.camera - 1, f.index)
        if kind == "none":  # frames without a fault are exactly those of the fault-free config
            assert np.array_equal(f.image, g.image) and np.array_equal(f.mask, g.mask)
            assert f.objects == g.objects
            assert {k: v for k, v in f.params.items() if k != "camera_fault"} == \
                {k: v for k, v in g.params.items() if k != "camera_fault"}
            continue
        assert f.params["camera_fault_labels"] == FAULT_LABEL_RULES[kind]
        fp = f.params["camera_fault_params"]
        assert isinstance(fp, dict) and fp  # every value the fault drew
        assert not np.array_equal(f.image, g.image)
    assert "none" in kinds and len(kinds) >= 3
    # the fault is drawn from the frame's own random stream: the same frame always gets the same fault
    assert [faulty.frame_params(c, i)["camera_fault"] for c in (0, 1) for i in range(4)] == \
        [faulty.render(c, i).params["camera_fault"] for c in (0, 1) for i in range(4)]


@pytest.mark.parametrize("fault", ["turned_away", "too_dark"])
def test_full_frame_faults_drop_every_label(tmp_path, fault):
    cfg = _fault_config([fault])
    clean = Scene(_small_config(randomization=CLEAR))
    n_clean = 0
    for f in Scene(cfg).frames():
        assert f.params["camera_fault"] == fault and f.params["camera_fault_labels"] == "dropped"
        assert f.objects == [] and not f.mask.any()
        n_clean += sum(o["bbox_visible"] is not None for o in clean.render(f.camera - 1, f.index).objects)
        if fault == "too_dark":
            assert f.image.mean() < 25
        else:
            assert f.params["camera_fault_params"]["away_view"] in ("sky", "wall", "ceiling")
    assert n_clean > 10  # the same frames without the fault do show people and vehicles
    out = write_dataset(cfg, tmp_path / "ds")
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 6 and coco["annotations"] == []
    assert all(im["params"]["camera_fault"] == fault for im in coco["images"])
    for cam in ("cam01", "cam02"):
        assert (out / "mot" / cam / "gt" / "gt.txt").read_text() == ""
        assert len(list((out / "mot" / cam / "img1").glob("*.jpg"))) == 3
    assert not list((out / "reid").rglob("*.jpg"))


def test_covered_lens_hides_what_is_behind_the_cover(tmp_path):
    cfg = _fault_config(["covered"], duration=4)
    clean = Scene(_small_config(randomization=CLEAR, duration=4))
    partly = fully = 0
    hidden_objects = 0
    for f in Scene(cfg).frames():
        assert f.params["camera_fault_labels"] == "occluded"
        assert 0.0 < f.params["camera_fault_params"]["hidden_fraction"] <= 1.0
        g = _by_id(clean.render(f.camera - 1, f.index).objects)
        assert set(_by_id(f.objects)) == set(g)  # the same objects, only their visibility changes
        for o in f.objects:
            c = g[o["identity"]]
            # every pixel the object showed is either still visible or behind the cover
            assert o["visible_pixels"] + o["fault_hidden_pixels"] == c["visible_pixels"]
            assert int((f.mask == o["identity"]).sum()) == o["visible_pixels"]
            assert o["bbox_amodal"] == c["bbox_amodal"] and o["truncation"] == c["truncation"]
            assert o["visible_fraction"] <= c["visible_fraction"]
            if o["visible_pixels"] == 0:
                assert o["bbox_visible"] is None and o["visible_fraction"] == 0.0
            if o["fault_hidden_pixels"]:
                fully += o["visible_pixels"] == 0
                partly += o["visible_pixels"] > 0
                hidden_objects += o["visible_pixels"] == 0 and c["visible_pixels"] > 0
    assert fully and partly
    # writers: no COCO box, MOT row or crop for an object the cover hides entirely
    out = write_dataset(cfg, tmp_path / "ds")
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    frames = list(Scene(cfg).frames())
    assert len(coco["annotations"]) == sum(o["bbox_visible"] is not None for f in frames for o in f.objects)
    rows = sum(len((out / "mot" / c / "gt" / "gt.txt").read_text().splitlines()) for c in ("cam01", "cam02"))
    assert rows == sum(1 for f in frames for o in f.objects
                       if not (o["fault_hidden_pixels"] and o["visible_pixels"] == 0))
    assert rows == sum(len(f.objects) for f in frames) - hidden_objects


def _sharpness(im: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean())


@pytest.mark.parametrize("fault", ["dirty_lens", "defocused"])
def test_image_only_faults_keep_labels(fault):
    cfg = _fault_config([fault], duration=2)
    clean = Scene(_small_config(randomization=CLEAR, duration=2))
    for f in Scene(cfg).frames():
        g = clean.render(f.camera - 1, f.index)
        assert f.params["camera_fault_labels"] == "kept"
        assert f.objects == g.objects and np.array_equal(f.mask, g.mask)
        a, b = f.image.astype(np.float32), g.image.astype(np.float32)
        assert np.abs(a - b).mean() > 2.0 and _sharpness(f.image) < _sharpness(g.image)  # blurred (and veiled)
    if fault == "dirty_lens":
        assert 0.12 <= f.params["camera_fault_params"]["dirt_veil_opacity"] <= 0.45


def test_faults_are_deterministic_and_persist_per_sequence():
    cfg = _fault_config(list(CAMERA_FAULTS), prob=0.7, duration=3)
    d1 = _digest(Scene(cfg).frames())
    assert d1 == _digest(Scene(_fault_config(list(CAMERA_FAULTS), prob=0.7, duration=3)).frames())
    assert d1 != _digest(Scene(_fault_config(list(CAMERA_FAULTS), prob=0.7, duration=3, seed=8)).frames())
    # per sequence: one fault per camera, with the same parameters in every frame (a covered camera stays covered)
    seq = Scene(_fault_config(["covered", "dirty_lens"], randomize_per="sequence", duration=3))
    for cam in (0, 1):
        fr = [seq.render(cam, i) for i in range(3)]
        assert len({f.params["camera_fault"] for f in fr}) == 1
        assert all(f.params["camera_fault_params"] == fr[0].params["camera_fault_params"] for f in fr)


# --------------------------------------------------------------------------- collision avoidance
def _walkers(sc):
    return [p for p in sc.people if p.riding is None]


def _crowd_stats(cfg, frames):
    sc = Scene(cfg)
    walkers = _walkers(sc)
    r = np.array([footprint_radius(p.look.height) for p in walkers])
    boxes = obstacle_boxes(sc.world, sc.vehicles)
    overlap_frames, worst_prop = 0, -1.0
    walked = {}
    for f in range(frames):
        pst, _ = sc.agent_states(f)
        P = np.array([pst[p.identity][:2] for p in walkers])
        d = np.hypot(P[:, None, 0] - P[None, :, 0], P[:, None, 1] - P[None, :, 1])
        over = r[:, None] + r[None, :] - d
        np.fill_diagonal(over, -1.0)
        overlap_frames += bool((over > 0.05).any())  # footprints overlapping by more than 5 cm
        sd, _, _ = box_signed_distance(P[:, 0:1], P[:, 1:2], boxes[None])
        worst_prop = max(worst_prop, float((r[:, None] - sd).max()))  # > 0: a footprint inside a prop
        for p in walkers:
            walked.setdefault(p.identity, []).append(pst[p.identity][3])
    return sc, overlap_frames, worst_prop, walked, len(boxes)


def test_people_avoid_each_other_and_props():
    kw = dict(seed=3, cameras=1, resolution=SMALL, duration=50, fps=5.0, surface="pavement", world_size=20.0,
              crowd_density=8.0, num_vehicles=0, randomization=CLEAR,
              props={"bench": 3, "pole": 3, "bin": 3, "tree": 2, "parked_vehicle": 2})
    sc, overlap_frames, worst_prop, walked, n_boxes = _crowd_stats(SceneConfig(**kw), 50)
    assert len(_walkers(sc)) > 20 and n_boxes >= 12
    assert overlap_frames <= 2, overlap_frames
    assert worst_prop <= 0.01, worst_prop  # nobody walks through a prop or a parked car
    # ... and they still get somewhere: most walk at close to their preferred speed
    ratios = [(walked[p.identity][-1] - walked[p.identity][0]) / (p.trajectory.speed * 49 / 5.0)
              for p in _walkers(sc) if p.trajectory.speed > 0]
    assert np.median(ratios) > 0.7 and min(ratios) > 0.3
    # the renderer draws people where the simulation puts them
    pst, _ = sc.agent_states(7)
    for o in sc.render(0, 7).objects:
        if o["identity"] in pst and o["category"] == "person":
            assert o["world_position"][:2] == [round(pst[o["identity"]][0], 3), round(pst[o["identity"]][1], 3)]
    # without collision avoidance the same people walk through each other and through props
    _, overlap_off, prop_off, _, _ = _crowd_stats(SceneConfig(**kw, collision_avoidance=False), 50)
    assert overlap_off > 10 and prop_off > 0.1


def test_crowd_states_do_not_depend_on_the_order_frames_are_asked_for():
    cfg = _small_config(duration=30, surface="pavement", num_vehicles=0, crowd_density=10.0)
    a = Scene(cfg).crowd
    a._every, a._cache_max = 4, 3  # tiny cache: earlier frames are re-simulated from checkpoints
    late = a.positions(25).copy()
    early = a.positions(6).copy()
    b = Scene(cfg).crowd
    assert np.array_equal(b.positions(6), early) and np.array_equal(b.positions(25), late)
    assert not np.array_equal(early, late)


def test_routes_are_planned_around_props():
    box = np.array([[0.0, 0.0, 0.3, 1.0, 0.4]])
    pts, blocked = plan_route([(-5.0, 0.1), (5.0, -0.1), (-5.0, 0.1)], box, 0.3)
    assert len(pts) > 3 and not any(blocked)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        t = np.linspace(0.0, 1.0, 200)
        d, _, _ = box_signed_distance(x0 + t * (x1 - x0), y0 + t * (y1 - y0), box[0])
        assert d.min() >= 0.3 - 1e-9
    inside, _ = plan_route([(0.0, 0.0), (6.0, 0.0)], box, 0.3)  # a waypoint inside a prop moves out of it
    assert box_signed_distance(inside[0][0], inside[0][1], box[0])[0] >= 0.3


@pytest.mark.parametrize("density, world", [(60.0, 30.0), (400.0, 18.0)])
def test_dense_crowds_still_generate_quickly(density, world):
    import time
    t0 = time.perf_counter()
    sc = Scene(SceneConfig(seed=4, cameras=1, resolution=SMALL, duration=4, fps=5.0, surface="pavement",
                           world_size=world, crowd_density=density, num_vehicles=0, randomization=CLEAR))
    sim = sc.crowd
    pos = sim.positions(3)
    objs = sc.render(0, 3).objects
    elapsed = time.perf_counter() - t0
    assert sim.n > 400 and len(objs) > 100
    assert len(sim._pairs(pos[:, :2])[0]) <= MAX_NEIGHBOURS * sim.n  # work per step is capped
    assert elapsed < 30.0, elapsed  # ~1-2 s on one core
