"""Tests for the procedural camera-health frame generator (synthetic.camera_health)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import synthetic  # noqa: E402
from synthetic import camera_health as ch  # noqa: E402
from synthetic.camera_health import CLASSES, GENERATOR_NAME, generate_dataset, render_frame  # noqa: E402


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_json_types(v):
    """Parameters must be floats, ints, strs or (nested) lists of those."""
    if isinstance(v, list):
        for x in v:
            _check_json_types(x)
    else:
        assert type(v) in (int, float, str), f"unexpected parameter type {type(v)}: {v!r}"


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "ds"
    generate_dataset(out, num_per_class=3, size=(96, 72), seed=5, progress=False)
    return out


# --------------------------------------------------------------------------
# render_frame
def test_classes_and_constants():
    assert CLASSES == ("normal", "covered", "defocused", "too_dark", "turned_away")
    assert GENERATOR_NAME == "synthetic.camera_health"
    assert synthetic.__version__.count(".") == 2 and ch.GENERATOR_VERSION == synthetic.__version__


@pytest.mark.parametrize("label", CLASSES)
def test_render_frame_shape_and_determinism(label):
    a, pa = render_frame(label, 1234)
    b, pb = render_frame(label, 1234)
    assert a.shape == (120, 160, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert pa == pb
    assert pa["label"] == label and pa["seed"] == 1234
    json.dumps(pa)  # JSON-serialisable
    for v in pa.values():
        _check_json_types(v)
    c, _ = render_frame(label, 1235)
    assert not np.array_equal(a, c)
    # a plausible frame, not a constant image
    assert a.std() > 1.0


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (200, 40), (320, 240)])
def test_render_frame_sizes(size):
    for label in CLASSES:
        img, params = render_frame(label, 7, size)
        assert img.shape == (size[1], size[0], 3)
        assert (params["width"], params["height"]) == size


def test_base_scene_shared_between_labels():
    # the scene depends on the seed only; the class changes the camera fault
    _, pn = render_frame("normal", 99)
    _, pd = render_frame("defocused", 99)
    scene = {k: v for k, v in pn.items() if k.startswith("scene_")}
    assert scene and scene == {k: v for k, v in pd.items() if k.startswith("scene_")}
    _, pt = render_frame("turned_away", 99)
    assert not any(k.startswith("scene_") for k in pt)  # no ground, no people


# --------------------------------------------------------------------------
# generate_dataset
def test_same_seed_is_byte_identical(small_dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, num_per_class=3, size=(96, 72), seed=5, progress=False)
    h1, h2 = _hashes(small_dataset), _hashes(again)
    assert h1 == h2
    assert len(h1) == 3 * len(CLASSES) + 2


def test_other_seed_differs(small_dataset, tmp_path):
    other = tmp_path / "other"
    generate_dataset(other, num_per_class=3, size=(96, 72), seed=6, progress=False)
    h1, h2 = _hashes(small_dataset), _hashes(other)
    assert h1.keys() == h2.keys()
    pngs = [k for k in h1 if k.endswith(".png")]
    assert all(h1[k] != h2[k] for k in pngs)
    assert h1["provenance.jsonl"] != h2["provenance.jsonl"]


def test_counts_provenance_and_card(small_dataset):
    root = small_dataset
    for c in CLASSES:
        files = sorted(p.name for p in (root / c).iterdir())
        assert files == [f"{c}_{i:05d}.png" for i in range(3)]
    lines = (root / "provenance.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 * len(CLASSES)
    seen = set()
    for ci, c in enumerate(CLASSES):
        for i in range(3):
            rec = json.loads(lines[ci * 3 + i])
            assert lines[ci * 3 + i] == json.dumps(rec, sort_keys=True)  # sorted keys
            assert set(rec) == {"file", "label", "generator", "generator_version", "seed", "params", "licence"}
            assert rec["file"] == f"{c}/{c}_{i:05d}.png"
            assert (root / rec["file"]).is_file()
            assert rec["label"] == c == rec["params"]["label"]
            assert rec["generator"] == GENERATOR_NAME
            assert rec["generator_version"] == synthetic.__version__
            assert rec["licence"] == "generated"
            assert rec["seed"] == ch.derive_seed(5, ci, i) == rec["params"]["seed"]
            seen.add(rec["seed"])
            # the PNG is exactly what render_frame gives for that seed
            img = np.asarray(ch.Image.open(root / rec["file"]).convert("RGB"))
            assert np.array_equal(img, render_frame(c, rec["seed"], (96, 72))[0])
    assert len(seen) == len(lines)

    card = yaml.safe_load((root / "card.yaml").read_text(encoding="utf-8"))
    assert card["task"] == "classification"
    assert card["licence"] == "generated"
    assert card["format"] == "class folders"
    assert card["source"] == f"{GENERATOR_NAME} {synthetic.__version__}"
    assert card["classes"] == list(CLASSES)
    assert card["counts"] == {c: 3 for c in CLASSES}
    assert card["generation"] == {"num_per_class": 3, "size": [96, 72], "seed": 5, "base": "procedural"}
    digest = hashlib.sha256((root / "provenance.jsonl").read_bytes()).hexdigest()
    assert card["sha256"]["provenance.jsonl"] == digest
    assert not list(root.parent.glob("*.tmp-*"))


def test_existing_dir_raises(tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="exists"):
        generate_dataset(out, num_per_class=1, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ch.render_frame

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ch, "render_frame", flaky)
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, num_per_class=2, size=(64, 48), progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_per_class": 0}, "num_per_class"),
        ({"num_per_class": -3}, "num_per_class"),
        ({"num_per_class": 2.5}, "num_per_class"),
        ({"num_per_class": True}, "num_per_class"),
        ({"size": (31, 120)}, "size"),
        ({"size": (160, 16)}, "size"),
        ({"size": (160,)}, "size"),
        ({"size": (160, 120, 3)}, "size"),
        ({"size": (160.0, 120)}, "size"),
        ({"size": (0, 120)}, "size"),
        ({"size": (-160, 120)}, "size"),
        ({"size": "160x120"}, "size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_generate_dataset_value_errors(tmp_path, kwargs, name):
    out = tmp_path / "ds"
    with pytest.raises(ValueError, match=name):
        generate_dataset(out, progress=False, **kwargs)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_render_frame_value_errors():
    with pytest.raises(ValueError, match="label"):
        render_frame("broken", 0)
    with pytest.raises(ValueError, match="size"):
        render_frame("normal", 0, (20, 20))
    with pytest.raises(ValueError, match="size"):
        render_frame("normal", 0, (160, 120.5))
    with pytest.raises(ValueError, match="seed"):
        render_frame("normal", -5)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "synthetic.camera_health", str(out), "--per-class", "2", "--size", "64", "48",
         "--seed", "3", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    card = yaml.safe_load((out / "card.yaml").read_text(encoding="utf-8"))
    assert card["generation"] == {"num_per_class": 2, "size": [64, 48], "seed": 3, "base": "procedural"}
    assert sum(1 for _ in out.rglob("*.png")) == 2 * len(CLASSES)
    # refuses to overwrite
    res = subprocess.run(
        [sys.executable, "-m", "synthetic.camera_health", str(out), "--per-class", "1", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode != 0 and "exists" in res.stderr


# --------------------------------------------------------------------------
# learnability sanity check (no torch): hand-made features + nearest centroid
def _features(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = g.shape
    g4 = cv2.resize(g, (w // 4, h // 4), interpolation=cv2.INTER_AREA)  # suppresses sensor noise
    lap = cv2.Laplacian(g4, cv2.CV_32F)
    bh, bw = g4.shape[0] // 4, g4.shape[1] // 4
    blocks = g4[: bh * 4, : bw * 4].reshape(bh, 4, bw, 4)
    return np.array([
        g.mean(),                                   # mean brightness
        np.log1p(np.percentile(np.abs(lap), 90)),   # edge energy (Laplacian)
        (blocks.std(axis=(1, 3)) < 4.0).mean(),     # fraction of low-variance area
        g4.std(),                                   # global contrast
    ])


def _nearest_centroid_accuracy(xtr, ytr, xte, yte, cols) -> float:
    mu, sd = xtr[:, cols].mean(0), xtr[:, cols].std(0) + 1e-9
    a, b = (xtr[:, cols] - mu) / sd, (xte[:, cols] - mu) / sd
    centroids = np.stack([a[ytr == k].mean(0) for k in range(len(CLASSES))])
    pred = np.argmin(((b[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == yte).mean())


def test_classes_learnable_but_not_trivial():
    n_train, n_test = 40, 20
    feats, labels, split = [], [], []
    for ci, c in enumerate(CLASSES):
        for i in range(n_train + n_test):
            img, _ = render_frame(c, ch.derive_seed(2024, ci, i))
            feats.append(_features(img))
            labels.append(ci)
            split.append(i < n_train)
    x, y, tr = np.array(feats), np.array(labels), np.array(split)
    acc = _nearest_centroid_accuracy(x[tr], y[tr], x[~tr], y[~tr], [0, 1, 2, 3])
    acc_brightness = _nearest_centroid_accuracy(x[tr], y[tr], x[~tr], y[~tr], [0])
    assert acc > 0.6, f"nearest-centroid accuracy {acc:.2f}"
    assert acc_brightness < 0.95, f"brightness alone separates the classes ({acc_brightness:.2f})"
    assert acc_brightness < acc


def test_engine_base_renders_scene_engine_views():
    """``base="engine"``: the healthy view comes from the 3-D scene engine, deterministically."""
    a, pa = ch.render_frame("normal", 11, (96, 72), "engine")
    b, _ = ch.render_frame("normal", 11, (96, 72), "engine")
    c, _ = ch.render_frame("normal", 11, (96, 72), "procedural")
    assert a.shape == (72, 96, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert pa["base"] == "engine" and pa["engine_surface"] in ("road", "pavement", "grass", "platform", "indoor")
    dark, _ = ch.render_frame("too_dark", 11, (96, 72), "engine")
    assert dark.mean() < a.mean()
    with pytest.raises(ValueError, match="base must be one of"):
        ch.render_frame("normal", 11, (96, 72), "photoreal")


# --------------------------------------------------------------------------
# dirty lens and the fault code shared with the scene engine
def test_faults_are_the_scene_engine_implementations():
    from synthetic.scene import faults

    assert ch._apply_cover is faults.apply_cover and ch._render_away is faults.render_away
    assert ch._Params is faults.ParamRecorder and ch._blur is faults.blur
    assert set(faults.CAMERA_FAULTS) == (set(CLASSES) - {"normal"}) | set(ch.EXTRA_CLASSES)


def test_dirty_lens_extra_label():
    assert ch.EXTRA_CLASSES == ("dirty_lens",) and ch.ALL_CLASSES == CLASSES + ch.EXTRA_CLASSES
    a, pa = render_frame("dirty_lens", 77)
    b, pb = render_frame("dirty_lens", 77)
    assert a.shape == (120, 160, 3) and np.array_equal(a, b) and pa == pb
    json.dumps(pa)
    for v in pa.values():
        _check_json_types(v)
    assert pa["dirt_kind"] in ("spray", "smudge", "droplets") and 0.12 <= pa["dirt_veil_opacity"] <= 0.45
    n, pn = render_frame("normal", 77)
    assert {k: v for k, v in pa.items() if k.startswith("scene_")} == \
        {k: v for k, v in pn.items() if k.startswith("scene_")}  # the same place, seen through dirt
    assert not np.array_equal(a, n) and a.std() > 1.0
    kinds = {render_frame("dirty_lens", s, (64, 48))[1]["dirt_kind"] for s in range(30)}
    assert kinds == {"spray", "smudge", "droplets"}


def test_generate_with_the_extra_class_keeps_the_default_frames(small_dataset, tmp_path):
    out = generate_dataset(tmp_path / "six", num_per_class=3, size=(96, 72), seed=5, progress=False,
                           classes=CLASSES + ("dirty_lens",))
    h6, h5 = _hashes(out), _hashes(small_dataset)
    assert {k: v for k, v in h6.items() if k.endswith(".png") and not k.startswith("dirty_lens/")} == \
        {k: v for k, v in h5.items() if k.endswith(".png")}
    assert sum(k.startswith("dirty_lens/") for k in h6) == 3
    card = yaml.safe_load((out / "card.yaml").read_text(encoding="utf-8"))
    assert card["classes"] == list(CLASSES) + ["dirty_lens"] and card["counts"]["dirty_lens"] == 3
    assert card["generation"]["classes"] == card["classes"]
    for bad in (["smoke"], [], "covered", ["normal", "normal"]):
        with pytest.raises(ValueError, match="classes"):
            generate_dataset(tmp_path / "bad", num_per_class=1, size=(64, 48), progress=False, classes=bad)
    assert not (tmp_path / "bad").exists()
