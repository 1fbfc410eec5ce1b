"""Real-appearance people in the scene engine (synthetic.scene.sprites): cut-out person crops placed,
lit, occluded and labelled by the engine like procedural people."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthetic.scene import Scene, SceneConfig
from synthetic.scene import sprites as sprite_mod
from synthetic.scene.sprites import SpriteBank, cut_out

RED = (30, 30, 220)  # BGR


def _crop(rng: np.random.Generator, colour=RED) -> np.ndarray:
    """A 48x96 'person crop': a saturated body on a noisy grey pavement, as detector crops are framed."""
    img = np.clip(rng.normal(128, 12, (96, 48, 3)), 0, 255).astype(np.uint8)
    cv2.ellipse(img, (24, 10), (7, 8), 0, 0, 360, colour, -1)
    cv2.rectangle(img, (13, 18), (35, 55), colour, -1)
    cv2.rectangle(img, (16, 55), (32, 93), colour, -1)
    return img


@pytest.fixture()
def crops(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "crops"
    for ident in ("0001", "0002"):
        (root / ident).mkdir(parents=True)
        for f in range(1, 5):  # MARS names: one tracklet per identity, 4 frames
            cv2.imwrite(str(root / ident / f"{ident}C1T0001F{f:03d}.jpg"), _crop(rng))
    sprite_mod._BANKS.clear()
    return root


def _config(root, tmp_path, **kw) -> SceneConfig:
    ps = {"root": str(root), "stride": 1, "cache_dir": str(tmp_path / "cache"), "licence": "test-licence", **kw}
    return SceneConfig(seed=4, cameras=1, resolution=(320, 180), duration=2, surface="pavement",
                       crowd_density=4.0, num_vehicles=0, world_size=20.0,
                       camera_ranges={"height": [3.0, 3.5], "tilt": [10, 15], "hfov": [60, 70]},
                       randomization={"time_of_day": {"day": 1.0}, "rain_prob": 0.0, "snow_prob": 0.0,
                                      "fog_prob": 0.0, "motion_blur_prob": 0.0, "defocus_prob": 0.0,
                                      "noise_sigma": [0.0, 0.0], "jpeg_prob": 0.0, "exposure_prob": 0.0,
                                      "camera_fault_prob": 0.0},
                       person_sprites=ps)


def test_matte_keeps_the_person_and_drops_the_background():
    img = _crop(np.random.default_rng(1))
    a = cut_out(img)
    body = np.all(img == RED, axis=2)
    assert (a[body] >= 128).mean() > 0.95            # the person is kept
    corners = np.zeros_like(body)
    corners[:, :5] = corners[:, -5:] = True            # the pavement beside the person
    assert (a[corners] >= 128).mean() < 0.05


def test_bank_groups_tracklets_and_caches_mattes(crops, tmp_path):
    bank = SpriteBank(crops, stride=1, cache_dir=tmp_path / "cache")
    assert len(bank) == 8 and sorted(len(t) for t in bank.tracks) == [4, 4]
    cache = list((tmp_path / "cache").glob("sprites-*.npz"))
    assert len(cache) == 1
    again = SpriteBank(crops, stride=1, cache_dir=tmp_path / "cache")  # read from the cache
    assert all(np.array_equal(a.alpha, b.alpha) for a, b in zip(bank.sprites, again.sprites))
    assert bank.frame(0, 0.0) is bank.sprites[bank.tracks[0][0]]
    assert bank.frame(0, 0.31) is bank.sprites[bank.tracks[0][1]]  # the tracklet plays as the person walks
    assert len(SpriteBank(crops, stride=2)) == 4


def test_sprite_people_are_drawn_labelled_and_deterministic(crops, tmp_path):
    cfg = _config(crops, tmp_path)
    scene = Scene(cfg)
    assert scene.sprites is not None and scene.sprites.assign
    frame = scene.render(0, 1)
    people = [o for o in frame.objects if o["category"] == "person" and o["bbox_visible"]]
    worn = [o for o in people if "appearance" in o]
    assert worn and all(o["appearance"].startswith(("0001/", "0002/")) for o in worn)
    assert frame.params["person_sprites"]["licence"] == "test-licence"
    # the pixels of a sprite person are the crop's red body (lit by the scene), inside its box
    big = max(worn, key=lambda o: o["visible_pixels"])
    m = frame.mask == big["identity"]
    ys, xs = np.nonzero(m)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == big["bbox_visible"]
    rgb = frame.image[m].astype(float).mean(0)
    assert rgb[0] > rgb[1] + 60 and rgb[0] > rgb[2] + 60   # red dominates (RGB image)
    # the same config gives the same frame, even with a fresh bank (mattes recomputed)
    sprite_mod._BANKS.clear()
    cfg2 = _config(crops, tmp_path / "other")
    again = Scene(cfg2).render(0, 1)
    assert np.array_equal(again.image, frame.image)
    assert json.dumps(again.objects, sort_keys=True) == json.dumps(frame.objects, sort_keys=True)


def test_sprite_fraction_zero_keeps_procedural_people(crops, tmp_path):
    scene = Scene(_config(crops, tmp_path, fraction=0.0))
    assert scene.sprites.assign == {}
    assert all("appearance" not in o for o in scene.render(0, 0).objects)


def test_bad_sprite_folders_fail_before_rendering(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        Scene(_config(empty, tmp_path))
    with pytest.raises(ValueError, match="is not a folder"):
        _config(tmp_path / "missing", tmp_path).validate()
    with pytest.raises(ValueError, match="fraction must be in"):
        _config(empty, tmp_path, fraction=1.5).validate()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0001C1T0001F001.jpg").write_bytes(b"not a jpeg")
    sprite_mod._BANKS.clear()
    with pytest.raises(ValueError, match=r"0001C1T0001F001\.jpg: not a readable image"):
        Scene(_config(bad, tmp_path))


def test_detection_source_records_the_appearance_licence(crops, tmp_path):
    from synthetic.detection_source import SceneDetectionSource
    from vision.errors import DataError

    kw = dict(scenes=1, cameras=1, frames=1, resolution=(320, 180), surfaces=["pavement"],
              crowd_density=[4.0, 4.0], num_vehicles=[0, 0], world_size=20.0, progress=False)
    plain = SceneDetectionSource(str(tmp_path / "gen"), **kw)
    src = SceneDetectionSource(str(tmp_path / "gen"), person_sprites={"root": str(crops), "stride": 1,
                                                                         "licence": "test-licence"}, **kw)
    assert src.root != plain.root          # a different generated set, not a stale cache
    card = src.card()
    assert "test-licence" in card["licence"]
    doc = json.loads((src.root / "annotations.json").read_text())
    assert any("appearance" in a for a in doc["annotations"])
    assert all("test-licence" in im["licence"] for im in doc["images"])
    with pytest.raises(DataError, match="not a folder of person crops"):
        SceneDetectionSource(str(tmp_path / "gen"), person_sprites={"root": str(tmp_path / "nope")}, **kw)


def test_recolour_turns_clothes_and_keeps_greys():
    from synthetic.scene.sprites import recolour

    img = np.zeros((4, 2, 3), np.uint8)
    img[:2] = (200, 30, 30)      # a red shirt (RGB)
    img[2:] = (120, 120, 120)    # grey trousers
    out = recolour(img, 120.0)
    assert out[0, 0, 1] > out[0, 0, 0]          # red turned green
    assert np.array_equal(out[2:], img[2:])     # greys untouched


def test_exclude_and_recolour_make_new_identities(crops, tmp_path):
    bank = SpriteBank(crops, stride=1, exclude=["0002"])
    assert {Path(s.file).parts[0] for s in bank.sprites} == {"0001"}
    with pytest.raises(ValueError, match="no images .*excluded"):
        SpriteBank(crops, stride=1, exclude=["0001", "0002"])
    scene = Scene(_config(crops, tmp_path, recolour=True, exclude=["0002"]))
    hues = {a[2] for a in scene.sprites.assign.values()}
    assert len(hues) == len(scene.sprites.assign) > 1     # each person its own clothing colour
    objs = [o for o in scene.render(0, 0).objects if "appearance" in o]
    assert objs and all(o["appearance"].startswith("0001/") and "appearance_hue_shift" in o for o in objs)
    with pytest.raises(ValueError, match="recolour must be true or false"):
        _config(crops, tmp_path, recolour="yes").validate()


def test_reid_source_with_sprite_people(crops, tmp_path):
    from synthetic.reid_source import SyntheticReidSource

    src = SyntheticReidSource(str(tmp_path / "reid"), scenes=1, cameras=2, duration=4, world_size=16.0,
                              crowd_density=6.0, min_height=32.0, min_visible=0.3,
                              person_sprites={"root": str(crops), "stride": 1, "recolour": True,
                                              "licence": "test-licence"})
    samples = src.load()
    assert samples and all("test-licence" in s.meta["licence"] for s in samples)
    assert "test-licence" in src.card()["licence"]
    assert src.card()["generation"]["person_sprites"]["recolour"] is True
