"""Person re-identification: readers, identity splits, the P x K sampler, the Market-1501 protocol,
re-ranking, the embedders (+ ONNX parity) and the recipe end to end (train.py -> checkpoint -> MLflow)."""
from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_entry, shared
from vision.data.reid import (
    IdentityFolderSource,
    MarketSource,
    MarsSource,
    PKBatchSampler,
    ReidDataModule,
    ReidSplitSpec,
    parse_market,
    parse_mars,
    split_identities,
)
from vision.data.samples import Sample
from vision.errors import DataError
from vision.losses.reid import CenterLoss, batch_hard_triplet
from vision.metrics.reid import ReidEvalError, distance_matrix, evaluate, re_rank
from vision.models.reid import build_reid_model


def _jpg(path: Path, seed: int = 0, size=(16, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _market(root: Path, train=(), query=(), gallery=()) -> Path:
    for folder, names in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(names):
            _jpg(root / folder / n, seed=hash(n) % 1000 + i)
    return root


TRAIN = ["0001_c1s1_000100_01.jpg", "0001_c2s1_000200_01.jpg", "0002_c1s1_000300_01.jpg", "0002_c3s1_000400_01.jpg",
         "0003_c2s1_000500_01.jpg", "0003_c3s1_000600_01.jpg", "0004_c1s1_000700_01.jpg", "0004_c2s1_000800_01.jpg"]
QUERY = ["0007_c1s1_001000_00.jpg", "0008_c2s1_001100_00.jpg"]
GALLERY = ["0007_c1s1_001000_02.jpg", "0007_c3s1_001200_01.jpg", "0008_c1s1_001300_01.jpg",
           "0000_c1s1_001400_01.jpg", "-1_c2s1_001500_01.jpg"]


# -- readers ---------------------------------------------------------------------------------------------
def test_parse_names():
    assert parse_market("0005_c1s1_001351_00.jpg") == {"identity": "0005", "camera": 1, "sequence": 1,
                                                       "frame": 1351, "box": 0}
    assert parse_market("-1_c3s2_000151_04.jpg")["identity"] == "-1"
    assert parse_mars("0003C4T0003F001.jpg") == {"identity": "0003", "camera": 4, "tracklet": 3, "frame": 1}
    assert parse_mars("00-1C1T0001F002.jpg")["identity"] == "-1"
    for bad in ("0005_c1_001351_00.jpg", "person.jpg", "0005_x1s1_001351_00.jpg"):
        with pytest.raises(ValueError):
            parse_market(bad)
    with pytest.raises(ValueError):
        parse_mars("0003_C4T0003F001.jpg")


def test_market_reader_roles_junk_distractors_namespace(tmp_path):
    root = _market(tmp_path / "m", TRAIN, QUERY, GALLERY)
    samples = MarketSource(str(root), name="mk").load()
    by_rel = {s.relpath: s for s in samples}
    s = by_rel["query/0007_c1s1_001000_00.jpg"]
    assert s.label == "mk:0007" and s.source == "mk" and s.meta["camera"] == 1 and s.meta["role"] == "query"
    assert s.meta["kind"] == "real" and s.meta["frame"] == 1000
    junk = by_rel["bounding_box_test/-1_c2s1_001500_01.jpg"]
    assert junk.meta["junk"] and not junk.meta["distractor"]
    assert by_rel["bounding_box_test/0000_c1s1_001400_01.jpg"].meta["distractor"]
    shared_ns = MarketSource(str(root), name="other", namespace="mk").load()
    assert {x.label for x in shared_ns} == {x.label for x in samples}


def test_market_reader_bad_names_empty_crops_and_skip_policy(tmp_path):
    root = _market(tmp_path / "m", TRAIN + ["person_12.jpg"], QUERY, GALLERY)
    (root / "bounding_box_test" / "0007_c2s1_009999_01.jpg").write_bytes(b"")
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"x")
    with pytest.raises(DataError) as e:
        MarketSource(str(root)).load()
    msg = str(e.value)
    assert "person_12.jpg" in msg and "does not parse" in msg
    assert "0007_c2s1_009999_01.jpg" in msg and "empty crop" in msg
    src = MarketSource(str(root), policy="skip")
    samples = src.load()
    rep = src.report.to_dict()
    assert rep["skipped_count"] == 2 and {Path(p["file"]).name for p in rep["skipped"]} == {
        "person_12.jpg", "0007_c2s1_009999_01.jpg"}
    assert any("Thumbs.db" in p["file"] for p in rep["ignored"])
    assert len(samples) == len(TRAIN) + len(QUERY) + len(GALLERY)


def test_market_reader_junk_query_and_missing_gallery(tmp_path):
    root = _market(tmp_path / "m", TRAIN, QUERY + ["-1_c1s1_000001_00.jpg"], GALLERY)
    with pytest.raises(DataError, match="junk"):
        MarketSource(str(root)).load()
    root2 = _market(tmp_path / "m2", TRAIN, QUERY, [])
    (root2 / "bounding_box_test").rmdir()
    with pytest.raises(DataError, match="bounding_box_test"):
        MarketSource(str(root2)).load()
    with pytest.raises(DataError, match="not found"):
        MarketSource(str(tmp_path / "absent")).load()


def test_mars_reader(tmp_path):
    root = tmp_path / "mars"
    for f in range(1, 7):
        _jpg(root / "bbox_train" / "0003" / f"0003C4T0003F{f:03d}.jpg", f)
    for f in range(1, 3):
        _jpg(root / "bbox_train" / "0005" / f"0005C1T0001F{f:03d}.jpg", 10 + f)
        _jpg(root / "bbox_train" / "0005" / f"0005C2T0002F{f:03d}.jpg", 20 + f)
    src = MarsSource(str(root), name="mars", max_per_tracklet=3)
    samples = src.load()
    assert Counter(s.label for s in samples) == {"mars:0003": 3, "mars:0005": 4}
    assert {s.meta["tracklet"] for s in samples if s.label == "mars:0005"} == {1, 2}
    assert src.report.counts["frames_not_used"] == 3
    _jpg(root / "bbox_train" / "0005" / "0006C1T0001F001.jpg")
    with pytest.raises(DataError, match="folder is 0005"):
        MarsSource(str(root)).load()


def test_identity_folder_reader(tmp_path):
    root = tmp_path / "folders"
    for pid in ("alice", "bob"):
        for cam in ("cam1", "cam2"):
            _jpg(root / pid / cam / "a.jpg")
    samples = IdentityFolderSource(str(root), name="f").load()
    assert {(s.label, s.meta["camera"]) for s in samples} == {
        ("f:alice", "cam1"), ("f:alice", "cam2"), ("f:bob", "cam1"), ("f:bob", "cam2")}
    _jpg(root / "bob" / "loose.jpg")
    with pytest.raises(DataError, match="loose.jpg"):
        IdentityFolderSource(str(root)).load()


def test_real_market1501_mini():
    root = shared("market1501_mini")
    src = MarketSource(str(root), name="market1501_mini", card="market1501_mini")
    samples = src.load()  # verifies every file against the card's checksums
    assert len(samples) == 66 and len({s.label for s in samples}) == 23
    assert {s.meta["camera"] for s in samples} == {1, 2, 3, 4, 5, 6}
    dm = ReidDataModule({"market1501_mini": src}, split={"val_identities": 0.2}, batch_size=8, num_instances=2)
    dm.setup("fit")
    ids = {k: {s.label for s in v} for k, v in dm.splits.items()}
    own_train = {s.label for s in samples if s.meta["role"] == "train"}
    assert ids["train"] | ids["val_query"] | ids["val_gallery"] == own_train  # the dataset's own split
    assert len(ids["query"]) == 10 and ids["query"] == ids["gallery"]
    assert not ids["train"] & (ids["query"] | ids["val_query"] | ids["val_gallery"])
    assert dm.num_classes == len(ids["train"]) and dm.labels == sorted(ids["train"])
    assert dm.spec.size == (256, 128) and dm.spec.resize == "stretch"


def test_real_mars_mini_seeded_identity_split():
    root = shared("mars_mini")
    src = MarsSource(str(root), name="mars_mini", card="mars_mini", max_per_tracklet=4)
    dm = ReidDataModule({"mars_mini": src}, split={"test_identities": 0.5, "val_identities": 0.0},
                        batch_size=8, num_instances=2)
    dm.setup("fit")
    ids = {k: {s.label for s in v} for k, v in dm.splits.items()}
    assert len(ids["train"]) == 8 and not ids["train"] & ids["gallery"]
    assert dm.info["val_is_test"]
    for q in dm.splits["query"]:  # every query has a gallery image of its identity in another camera
        assert any(g.label == q.label and g.meta["camera"] != q.meta["camera"] for g in dm.splits["gallery"])


def test_synthetic_source_generates_once_namespaced(tmp_path):
    from synthetic.reid_source import SyntheticReidSource

    kw = dict(seed=3, scenes=2, cameras=2, duration=6, crowd_density=6.0, surfaces=["pavement", "indoor"])
    src = SyntheticReidSource(str(tmp_path / "cache"), **kw)
    samples = src.load()
    assert src.kind == "synthetic" and samples
    assert all(s.label.startswith("reid_synthetic:s0") and s.meta["licence"] == "generated" for s in samples)
    assert {s.meta["scene"] for s in samples} == {0, 1} and all("params" in s.meta for s in samples)
    # scene-namespaced identities and cameras: person 1 of scene 0 is not person 1 of scene 1
    assert all(s.label.endswith(s.meta["identity"]) and s.meta["camera"].startswith(s.meta["identity"][:3])
               for s in samples)
    assert {s.meta["role"] for s in samples} <= {"train", "query", "gallery"}
    card = src.card()
    assert card["licence"] == "generated" and card["generation"]["scenes"] == 2
    stamp = (src.root / "card.yaml").stat().st_mtime_ns
    again = SyntheticReidSource(str(tmp_path / "cache"), **kw)
    assert again.root == src.root and [s.key for s in again.load()] == [s.key for s in samples]
    assert (src.root / "card.yaml").stat().st_mtime_ns == stamp  # cached, not regenerated
    assert SyntheticReidSource(str(tmp_path / "cache"), **{**kw, "seed": 4}).root != src.root
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no partial folders
    with pytest.raises(DataError, match="scene 0"):
        SyntheticReidSource(str(tmp_path / "cache"), cameras=0)
    # the engine's camera ranges (e.g. the deployment cameras' geometry) reach every scene and the cache key
    street = SyntheticReidSource(str(tmp_path / "cache"), **kw, camera_ranges={"height": [2.5, 4.0], "tilt": 10})
    assert street.root != src.root and street.params["camera_ranges"] == {"height": [2.5, 4.0], "tilt": 10}
    from synthetic.scene.scene import Scene

    cams = [c for cfg in street._configs() for c in Scene(cfg).cameras]
    assert len(cams) == 4 and all(2.5 <= c.height <= 4.0 and c.tilt == 10.0 for c in cams)
    with pytest.raises(DataError, match="camera_ranges.height"):
        SyntheticReidSource(str(tmp_path / "cache"), **kw, camera_ranges={"height": [0.1, 4.0]})


# -- splits ----------------------------------------------------------------------------------------------
def _fake(source: str, n_ids: int, cams: int = 3, per_cam: int = 2, role=None, kind="real") -> list[Sample]:
    out = []
    for i in range(n_ids):
        for c in range(1, cams + 1):
            for j in range(per_cam):
                out.append(Sample(f"/x/{source}/{i}_{c}_{j}.jpg", f"{source}:{i:04d}", source, f"{i}_{c}_{j}.jpg",
                                  {"identity": f"{i:04d}", "camera": c, "role": role, "kind": kind,
                                   "junk": False, "distractor": False}))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_identity_split_never_leaks(seed):
    samples = _fake("a", 20) + _fake("b", 15, cams=2, per_cam=3)
    spec = ReidSplitSpec(test_identities=0.4, val_identities=0.2, seed=seed)
    splits, info = split_identities(samples, spec)
    ids = {k: {s.label for s in v} for k, v in splits.items()}
    held = ids["val_query"] | ids["val_gallery"]
    test = ids["query"] | ids["gallery"]
    assert not ids["train"] & held and not ids["train"] & test and not held & test
    assert ids["query"] <= ids["gallery"] and ids["val_query"] <= ids["val_gallery"]
    every = [s.key for v in splits.values() for s in v]
    assert len(every) == len(set(every)) == len(samples)  # each image in exactly one split
    for src in ("a", "b"):  # each source contributes train and test identities
        assert any(lab.startswith(src) for lab in ids["train"]) and any(lab.startswith(src) for lab in test)
    again, _ = split_identities(samples, spec)
    assert {k: [s.key for s in v] for k, v in again.items()} == {k: [s.key for s in v] for k, v in splits.items()}
    assert not info["val_is_test"]


def test_split_warns_on_query_identity_absent_from_gallery(tmp_path):
    root = _market(tmp_path / "m", TRAIN, QUERY + ["0009_c1s1_000001_00.jpg"], GALLERY)
    dm = ReidDataModule({"m": MarketSource(str(root))}, split={"val_identities": 0.0}, batch_size=4,
                        num_instances=2)
    dm.setup("fit")
    warnings = dm.summary()["warnings"]
    assert any("absent from the gallery" in w and "m:0009" in w for w in warnings), warnings
    gallery = {s.relpath for s in dm.splits["gallery"]}
    assert "bounding_box_test/0000_c1s1_001400_01.jpg" in gallery and "bounding_box_test/-1_c2s1_001500_01.jpg" in gallery
    # evaluation items: junk -> identity -1
    ds = dm.eval_dataset("test")
    items = {ds.samples[i].relpath: ds[i] for i in range(len(ds))}
    assert items["bounding_box_test/-1_c2s1_001500_01.jpg"][1] == -1
    assert items["query/0007_c1s1_001000_00.jpg"][4] == 0 and items["bounding_box_test/0007_c3s1_001200_01.jpg"][4] == 1


def test_split_shared_namespace_conflict_is_an_error(tmp_path):
    a = _market(tmp_path / "a", TRAIN, QUERY, GALLERY)
    b = _market(tmp_path / "b", ["0007_c1s1_000100_01.jpg", "0007_c2s1_000100_01.jpg"] + TRAIN[:4], QUERY, GALLERY)
    dm = ReidDataModule({"a": MarketSource(str(a)), "b": MarketSource(str(b), namespace="a")}, batch_size=4,
                        num_instances=2)
    with pytest.raises(DataError, match="leak"):
        dm.setup("fit")


def test_datamodule_state_roundtrip_and_calibration(tmp_path):
    root = _market(tmp_path / "m", TRAIN, QUERY, GALLERY)
    dm = ReidDataModule({"m": MarketSource(str(root))}, split={"val_identities": 0.25}, batch_size=4,
                        num_instances=2, seed=3)
    dm.setup("fit")
    state = json.loads(json.dumps(dm.state_dict()))
    dm2 = ReidDataModule({"m": MarketSource(str(root))}, batch_size=4, num_instances=2, seed=99)
    dm2.load_state_dict(state)
    dm2.setup("fit")
    assert {k: [s.key for s in v] for k, v in dm2.splits.items()} == state["splits"]
    assert dm2.labels == dm.labels
    cal = dm.calibration_samples(4, seed=0)
    assert len(cal) == 4 and len({s.label for s in cal[:len(dm.labels)]}) == min(4, len(dm.labels))
    x, y, i = dm.train_dataset()[0]
    assert x.shape == (3, 256, 128) and y == dm.labels.index(dm.splits["train"][0].label) and i == 0


# -- P x K sampler ---------------------------------------------------------------------------------------
def _pool():
    idents, cams, syn = [], [], []
    for i in range(12):  # real: 12 identities, 3 cameras x 2 images
        for c in range(3):
            idents += [f"r:{i}"] * 2
            cams += [f"r:{c}"] * 2
            syn += [False] * 2
    for i in range(30):  # synthetic: 30 identities, 5 images in one camera
        idents += [f"s:{i}"] * 5
        cams += ["s:0"] * 5
        syn += [True] * 5
    return idents, cams, syn


def test_pk_sampler_shape_seeding_and_balance():
    idents, cams, syn = _pool()
    s = PKBatchSampler(idents, 24, 4, seed=5, cameras=cams, synthetic=syn, synthetic_fraction=0.5, num_batches=10)
    s.set_epoch(0)
    e0 = list(s)
    assert len(e0) == 10
    for batch in e0:
        idx = [i for i, _ in batch]
        per = Counter(idents[i] for i in idx)
        assert len(batch) == 24 and len(per) == 6 and set(per.values()) == {4}  # P = 6 identities x K = 4
        assert sum(1 for ident in per if ident.startswith("s:")) == 3  # round(6 * 0.5) synthetic identities
        assert all(syn[i] == ident.startswith("s:") for i in idx for ident in [idents[i]])
    assert e0 == list(s)  # same seed and epoch: same batches
    s.set_epoch(1)
    assert list(s) != e0
    s2 = PKBatchSampler(idents, 24, 4, seed=5, cameras=cams, synthetic=syn, synthetic_fraction=0.5, num_batches=10)
    assert list(s2) == e0  # a fresh sampler (a resumed run) replays epoch 0
    sched = PKBatchSampler(idents, 24, 4, seed=5, synthetic=syn, schedule=[{"epochs": 1, "synthetic_fraction": 1.0},
                                                                           {"synthetic_fraction": 0.0}])
    assert all(syn[i] for b in sched for i, _ in b)
    sched.set_epoch(1)
    assert not any(syn[i] for b in sched for i, _ in b)


def test_pk_sampler_camera_aware():
    idents, cams, syn = _pool()
    aware = PKBatchSampler(idents, 12, 3, seed=0, cameras=cams, synthetic=syn, synthetic_fraction=0.0, num_batches=20)
    for batch in aware:
        by_id: dict[str, list[str]] = {}
        for i, _ in batch:
            by_id.setdefault(idents[i], []).append(cams[i])
        for ident, cs in by_id.items():
            assert len(set(cs)) == 3, (ident, cs)  # K = 3 images from the identity's 3 cameras
    blind = PKBatchSampler(idents, 12, 3, seed=0, cameras=cams, synthetic=syn, synthetic_fraction=0.0,
                           num_batches=20, camera_aware=False)
    distinct = [len({cams[i] for i, _ in b if idents[i] == ident}) for b in blind for ident in {idents[i] for i, _ in b}]
    assert min(distinct) < 3  # without camera awareness some identities get repeated cameras


def test_pk_sampler_errors():
    idents, cams, syn = _pool()
    with pytest.raises(ValueError, match="multiple"):
        PKBatchSampler(idents, 10, 4, seed=0)
    with pytest.raises(ValueError, match="P >= 2"):
        PKBatchSampler(idents, 4, 4, seed=0)
    with pytest.raises(ValueError, match="real identities"):
        PKBatchSampler(idents, 64, 2, seed=0, synthetic=syn, synthetic_fraction=0.5)  # 16 real wanted, 12 there


# -- metrics ----------------------------------------------------------------------------------------------
def test_market_protocol_hand_computed():
    # one query (id 1, camera 0); ranking: id1 (cam 1), id2, id1 (cam 2), id3
    r = evaluate(np.array([[0.1, 0.2, 0.3, 0.4]]), [1], [1, 2, 1, 3], [0], [1, 1, 2, 1], max_rank=4)
    assert r["rank1"] == 1.0 and r["cmc"] == [1.0, 1.0, 1.0, 1.0]
    assert r["map"] == pytest.approx((1 / 1 + 2 / 3) / 2)  # precision at the two hits
    assert r["minp"] == pytest.approx(2 / 3)  # 2 matches, the last at rank 3
    assert r["num_valid"] == 1 and r["num_invalid"] == 0


def test_same_camera_exclusion_junk_and_cross_camera():
    d = np.array([[0.05, 0.1, 0.2]])
    ids, cams = [1, 2, 1], [0, 1, 1]
    kept = evaluate(d, [1], ids, [0], cams, max_rank=3, exclude_same_camera=False)
    assert kept["rank1"] == 1.0 and kept["map"] == pytest.approx((1 + 2 / 3) / 2)
    market = evaluate(d, [1], ids, [0], cams, max_rank=3)  # the same-camera id-1 image does not count
    assert market["rank1"] == 0.0 and market["cmc"][:2] == [0.0, 1.0]
    assert market["map"] == pytest.approx(0.5) and market["minp"] == pytest.approx(0.5)
    junk = evaluate(np.array([[0.01, 0.1, 0.2]]), [1], [-1, 1, 2], [0], [1, 1, 1], max_rank=3)
    assert junk["rank1"] == 1.0 and junk["map"] == 1.0
    # cross-camera only: a different identity in the query's camera is removed too
    d2 = np.array([[0.05, 0.1]])
    assert evaluate(d2, [1], [2, 1], [0], [0, 1])["rank1"] == 0.0
    cc = evaluate(d2, [1], [2, 1], [0], [0, 1], cross_camera_only=True)
    assert cc["rank1"] == 1.0 and cc["map"] == 1.0
    with pytest.raises(ReidEvalError, match="two cameras"):
        evaluate(d2, [1], [2, 1], [0], [0, 0], cross_camera_only=True)


def test_invalid_queries_are_counted_not_dropped():
    d = np.array([[0.1, 0.2], [0.3, 0.1], [0.2, 0.2]])
    r = evaluate(d, [1, 2, 7], [1, 2], [0, 0, 0], [1, 1], max_rank=2, query_names=["q1", "q2", "q7"])
    assert r["num_queries"] == 3 and r["num_valid"] == 2 and r["num_invalid"] == 1
    assert r["invalid_queries"] == ["q7"] and r["rank1"] == 1.0 and r["map"] == 1.0


def test_distance_matrix():
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    g = np.array([[2.0, 0.0], [1.0, 1.0]])
    assert np.allclose(distance_matrix(q, g), [[0.0, 1 - 2 ** -0.5], [1.0, 1 - 2 ** -0.5]])
    assert np.allclose(distance_matrix(q, g, "euclidean"), [[1.0, 1.0], [8 ** 0.5, 2 ** 0.5]])


def _reference_re_ranking(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3):
    """The authors' loop-based algorithm (zhunzhong07/person-re-ranking), condensed, as an independent check."""
    orig = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0) ** 2
    orig = np.transpose(orig / np.max(orig, axis=0))
    V = np.zeros_like(orig)
    rank = np.argsort(orig).astype(np.int32)
    nq, n = q_g.shape[0], orig.shape[0]
    for i in range(n):
        fwd = rank[i, :k1 + 1]
        kr = fwd[np.where(rank[fwd, :k1 + 1] == i)[0]]
        exp = kr
        for c in kr:
            cf = rank[c, :int(np.around(k1 / 2.0)) + 1]
            ckr = cf[np.where(rank[cf, :int(np.around(k1 / 2.0)) + 1] == c)[0]]
            if len(np.intersect1d(ckr, kr)) > 2.0 / 3 * len(ckr):
                exp = np.append(exp, ckr)
        exp = np.unique(exp)
        w = np.exp(-orig[i, exp])
        V[i, exp] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.zeros((nq, n))
    for i in range(nq):
        m = np.minimum(V[i][None], V).sum(1)
        jac[i] = 1 - m / (2.0 - m)
    return (jac * (1 - lambda_value) + orig[:nq] * lambda_value)[:, nq:]


def test_re_ranking_toy_set_and_reference():
    # a query just off its identity's tight cluster, with another identity's outlier nearer to it
    q = np.array([[0.42, 0.0]])
    g = np.array([[0.0, 0.05], [0.0, -0.05], [-0.05, 0.0], [0.8, 0.0], [1.0, 0.05], [1.0, -0.05]])
    gid, qid = [0, 0, 0, 1, 1, 1], [0]
    qg, qq, gg = (distance_matrix(a, b, "euclidean") for a, b in ((q, g), (q, q), (g, g)))
    assert evaluate(qg, qid, gid, [0], [1] * 6)["rank1"] == 0.0
    rr = re_rank(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    assert rr.shape == (1, 6) and evaluate(rr, qid, gid, [0], [1] * 6)["rank1"] == 1.0
    # lambda = 1 keeps the original order
    assert (np.argsort(re_rank(qg, qq, gg, lambda_value=1.0), 1) == np.argsort(qg, 1)).all()
    rng = np.random.default_rng(0)
    for nq, ng, k1, k2 in ((5, 30, 20, 6), (4, 25, 6, 3)):
        f = rng.normal(size=(nq + ng, 8))
        qf, gf = f[:nq], f[nq:]
        args = (distance_matrix(qf, gf), distance_matrix(qf, qf), distance_matrix(gf, gf))
        assert np.allclose(re_rank(*args, k1=k1, k2=k2), _reference_re_ranking(*args, k1=k1, k2=k2), atol=1e-6)


# -- losses -----------------------------------------------------------------------------------------------
def test_batch_hard_triplet_and_center_loss():
    x = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    y = torch.tensor([0, 0, 1, 1])
    loss, stats = batch_hard_triplet(x, y, margin=3.0)
    # anchors: d_ap = 1 each; d_an = 3, 2, 2, 3 -> hinge 1, 2, 2, 1
    assert float(loss) == pytest.approx(1.5, abs=1e-5) and stats["active"] == 1.0
    assert float(batch_hard_triplet(x, y, margin=0.3)[0]) == pytest.approx(0.0)
    soft, _ = batch_hard_triplet(x, y, soft_margin=True)
    assert float(soft) == pytest.approx(float(torch.nn.functional.softplus(torch.tensor([-2.0, -1, -1, -2])).mean()))
    assert float(batch_hard_triplet(x, torch.zeros(4, dtype=torch.long))[0]) == 0.0  # no negatives: no loss
    c = CenterLoss(2, 1)
    with torch.no_grad():
        c.centers.copy_(torch.tensor([[0.5], [3.5]]))
    with torch.no_grad():
        assert float(c(x, y)) == pytest.approx(0.125)


# -- models -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,width", [("osnet_x0_25", 1.0), ("resnet18", 0.25), ("mobilenet_v2", 0.35)])
def test_model_shapes_and_normalized_output(arch, width):
    m = build_reid_model(arch, num_classes=7, embedding_dim=64, width_mult=width)
    x = torch.randn(4, 3, 128, 64)
    m.train()
    feats, logits = m(x)
    assert feats.shape == (4, 64) and logits.shape == (4, 7)
    m.eval()
    with torch.no_grad():
        e = m(x)
    assert e.shape == (4, 64) and torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)


def test_model_onnx_export_parity(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    m = build_reid_model("osnet_x0_25", num_classes=5, embedding_dim=128)
    m.train()
    with torch.no_grad():  # give the BN layers non-trivial running statistics
        for _ in range(3):
            m(torch.randn(8, 3, 256, 128))
    m.eval()
    x = torch.randn(2, 3, 256, 128)
    path = tmp_path / "reid.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["embeddings"])
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = m(x).numpy()
    assert out.shape == (2, 128)
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.999, cos


def test_pretrained_local_path(tmp_path):
    from vision.models.classifiers import build_classifier

    a = build_reid_model("resnet18", num_classes=4, width_mult=0.25).eval()
    torch.save({"state_dict": {f"model.{k}": v for k, v in a.state_dict().items()}}, tmp_path / "reid.ckpt")
    b = build_reid_model("resnet18", num_classes=9, width_mult=0.25, pretrained=str(tmp_path / "reid.ckpt")).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6)  # everything but the 9-identity classifier loaded
    cls = build_classifier("resnet18", num_classes=3, width_mult=0.25)
    torch.save(cls.state_dict(), tmp_path / "cls.pt")
    c = build_reid_model("resnet18", num_classes=4, width_mult=0.25, pretrained=str(tmp_path / "cls.pt"))
    assert torch.equal(c.backbone.conv1.weight, cls.conv1.weight)  # a classifier initialises the backbone


# -- task -------------------------------------------------------------------------------------------------
def test_single_camera_cross_camera_evaluation_is_a_clear_error(tmp_path):
    import pytorch_lightning as pl

    from vision.tasks.reid import ReidTask

    root = tmp_path / "onecam"
    for i in range(6):
        for j in range(3):
            _jpg(root / f"p{i}" / "cam1" / f"{j}.jpg", i * 10 + j)
    dm = ReidDataModule({"f": IdentityFolderSource(str(root))}, preprocess={"size": [32, 16]}, batch_size=4,
                        num_instances=2, split={"val_identities": 0.0})
    dm.setup("fit")
    assert any("one camera only" in w for w in dm.summary()["warnings"])
    task = ReidTask(build_reid_model("resnet18", dm.num_classes, 32, 0.25), functools.partial(torch.optim.SGD, lr=0.1),
                    labels=dm.labels, cross_camera=True)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    with pytest.raises(DataError, match="two cameras"):
        trainer.fit(task, datamodule=dm)


# -- the recipe end to end ----------------------------------------------------------------------------------
TINY_REID = ["data.preprocess.size=[64,32]", "data.batch_size=8", "data.num_instances=2", "data.eval_batch_size=32",
             "model.width_mult=0.25", "model.embedding_dim=32", "trainer.max_epochs=2", "data.batches_per_epoch=4",
             "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
             # a two-scene synthetic set (a few seconds to render) beside the real Market-1501 mini
             "data.sources.reid_synthetic.scenes=2", "data.sources.reid_synthetic.duration=15",
             "data.sources.reid_synthetic.cameras=3", "data.mix.synthetic_fraction=0.5", "task.rerank=true"]


@pytest.mark.slow
def test_recipe_end_to_end(tmp_path):
    import mlflow

    shared("market1501_mini")
    run_entry("train.py", tmp_path, "experiment=reid", *TINY_REID, "run_name=reid1", timeout=300)
    out = tmp_path / "outputs" / "reid1"
    run = json.loads((out / "run.json").read_text())
    ckpt = torch.load(run["best_checkpoint"], map_location="cpu", weights_only=True)
    meta = ckpt["vision"]
    assert meta["task"] == "reid" and meta["reid"]["embedding_dim"] == 32
    assert meta["preprocess"]["size"] == [64, 32]
    sources = {lab.split(":")[0] for lab in meta["labels"]}
    assert sources == {"market1501_mini", "reid_synthetic"}  # namespaced: real and synthetic never collide
    assert meta["datamodule"]["splits"] == json.loads((out / "splits.json").read_text())["splits"]
    assert (out / "eval" / "test_cmc.png").is_file() and (out / "eval" / "test_ranked_gallery.png").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    r = client.get_run(run["mlflow"]["run_id"])
    assert r.info.status == "FINISHED"
    for key in ("test/rank1", "test/map", "test/minp", "test/cross_camera/rank1", "test/reranked/map",
                "test/rank1/source/market1501_mini", "test/rank1/kind/synthetic", "val/map", "best/val/map"):
        assert key in r.data.metrics, key
    assert 0.0 <= r.data.metrics["test/rank1"] <= 1.0
    plots = {a.path for a in client.list_artifacts(r.info.run_id, "plots")}
    assert {"plots/test_cmc.png", "plots/test_ranked_gallery.png"} <= plots, plots
    report = json.loads(open(client.download_artifacts(r.info.run_id, "eval/test_report.json", str(tmp_path))).read())
    assert {"rank1", "map", "minp", "cmc", "cross_camera", "reranked", "slices"} <= set(report)
    assert report["slices"]["source"]["market1501_mini"]["num_queries"] == 20
