"""Sim-to-real refinement (synthetic/refine): a few real training steps on tiny crops (CUT with MLflow, CycleGAN
on a real video), refining a generated dataset (labels kept, provenance extended), the refined scenes as a
detection source, the geometry / re-id / domain-gap measures, and the bad-input errors."""
from __future__ import annotations

import json
import os
import subprocess

import mlflow
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import PY, REPO, shared
from synthetic.refine.apply import Refiner, refine_dataset, resolve_device
from synthetic.refine.data import load_frames
from synthetic.refine.domain import domain_accuracy
from synthetic.refine.geometry import dataset_geometry, edge_f1, reid_separability, shift
from synthetic.refine.run import train
from synthetic.scene import SceneConfig, write_dataset
from vision.checkpointing import load_checkpoint
from vision.data.detection_sources import COCOSource, MOTSource
from vision.errors import CheckpointError, ConfigError, DataError
from vision.runtime.preprocess import read_image

RES = (160, 96)  # width, height of the tiny synthetic frames
TINY = ["data.crop_size=32", "data.batch_size=2", "data.min_crops=8", "model.ngf=8", "model.n_blocks=2",
        "model.ndf=16", "model.num_patches=32", "model.mlp_dim=32", "model.nce_layers=[0,1,3,4]",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "callbacks.samples.size=48"]


def _scene(out, seed=3, resolution=RES, formats=("coco", "mot", "reid"), duration=4):
    cfg = SceneConfig(seed=seed, cameras=2, resolution=resolution, duration=duration, crowd_density=8.0,
                      world_size=12.0, num_vehicles=1, camera_ranges={"height": [2.5, 4.0], "tilt": [5.0, 20.0]})
    return write_dataset(cfg, out, formats)


def _cfg(tmp, *overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("refine", overrides=[f"paths.work_dir={tmp}", *TINY, *overrides])


@pytest.fixture(scope="module")
def scene_ds(tmp_path_factory):
    return _scene(tmp_path_factory.mktemp("scene") / "street")


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """'Real' frames that always exist: another scene, larger, green-tinted and noisy (another camera)."""
    src = _scene(tmp_path_factory.mktemp("other") / "s", seed=11, resolution=(192, 128), formats=("coco",))
    out = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    for i, p in enumerate(sorted((src / "coco" / "images").rglob("*.jpg"))):
        img = read_image(p).astype(np.float32)
        img = img * np.float32([0.8, 1.1, 0.6]) + rng.normal(0, 20, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(out / f"frame_{i:03d}.png")
    return out


@pytest.fixture(scope="module")
def trained(scene_ds, real_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = _cfg(tmp, f"data.synthetic=[{scene_ds}]", f"data.real=[{real_folder}]", "data.steps_per_epoch=3",
               "trainer.max_epochs=2", "run_name=cut", "model.lambda_self_reg=1.0")
    return train(cfg), tmp


def test_cut_trains_logs_to_mlflow_and_checkpoints(trained):
    result, tmp = trained
    ckpt = load_checkpoint(result["checkpoint"], task="refiner")
    meta = ckpt["vision"]["refiner"]
    assert (meta["mode"], meta["crop_size"], meta["frame_size"]) == ("cut", 32, list(RES))
    assert meta["data"]["synthetic"]["frames"] == 8 and meta["data"]["real"]["size"] == [192, 128]
    assert result["steps"] == 2 * 3 * 2  # 2 epochs x 3 batches x (D + G optimizer steps)
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlruns.db")
    rid = result["mlflow"]["run_id"]
    assert ckpt["vision"]["mlflow"]["run_id"] == rid
    hist = client.get_metric_history(rid, "train/loss_nce_epoch")
    assert len(hist) == 2 and all(np.isfinite(m.value) for m in hist)
    assert client.get_metric_history(rid, "train/loss_D_step")
    assert len(client.get_metric_history(rid, "train/loss_self_reg_epoch")) == 2
    arts = {a.path for a in client.list_artifacts(rid, "samples")}
    assert arts == {"samples/epoch_000.png", "samples/epoch_001.png"}
    assert "checkpoints/last.ckpt" in {a.path for a in client.list_artifacts(rid, "checkpoints")}
    grid = np.asarray(Image.open(result["samples"][-1]))
    assert grid.shape[0] == 3 * (48 + 2) + 2  # rows: synthetic, refined, real
    assert client.get_run(rid).data.tags["task"] == "refiner"


def test_cyclegan_on_a_real_video(tmp_path, scene_ds):
    clip = shared("clip") / "one-by-one-person-detection.mp4"
    cfg = _cfg(tmp_path, f"data.synthetic=[{scene_ds}]", f"data.real=[{clip}]", "data.frames_per_video=6",
               "data.steps_per_epoch=2", "trainer.max_epochs=1", "model.mode=cyclegan", "logger=none",
               "run_name=cyc")
    result = train(cfg)
    ckpt = load_checkpoint(result["checkpoint"], task="refiner")
    assert any(k.startswith("netG_B.") for k in ckpt["state_dict"])
    assert ckpt["vision"]["refiner"]["data"]["real"] == {"frames": 6, "size": [768, 432], "inputs": [str(clip)]}
    refiner = Refiner(result["checkpoint"])
    frame = read_image(next((scene_ds / "coco" / "images").rglob("*.jpg")))
    out = refiner.refine([frame])[0]
    assert out.shape == frame.shape and out.dtype == np.uint8


def test_apply_keeps_labels_and_extends_provenance(trained, scene_ds, tmp_path):
    result, _ = trained
    out = tmp_path / "refined"
    summary = refine_dataset(result["checkpoint"], scene_ds, out)
    rid = result["mlflow"]["run_id"]
    src_doc = json.loads((scene_ds / "coco" / "annotations.json").read_text())
    ref_doc = json.loads((out / "coco" / "annotations.json").read_text())
    assert ref_doc["annotations"] == src_doc["annotations"] and ref_doc["categories"] == src_doc["categories"]
    for a, b in zip(src_doc["images"], ref_doc["images"]):
        assert {k: v for k, v in b.items() if k not in ("refiner", "refined_from")} == a
        assert b["refiner"]["run_id"] == rid and b["refiner"]["mode"] == "cut"
        assert b["refined_from"]["file"] == f"coco/{a['file_name']}"
    for gt in scene_ds.glob("mot/*/gt/gt.txt"):
        assert (out / gt.relative_to(scene_ds)).read_bytes() == gt.read_bytes()
    prov = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert len(prov) == len((scene_ds / "provenance.jsonl").read_text().splitlines())
    assert all(p["kind"] == "refined" and p["refiner"]["run_id"] == rid for p in prov)
    assert all(p["refiner"]["checkpoint_sha256"] == summary["refiner"]["checkpoint_sha256"] for p in prov)
    card = (out / "card.yaml").read_text()
    assert "kind: refined" in card and rid in card
    # every image has its source's size; the COCO and MOT copies of a frame stay identical
    for p in scene_ds.rglob("*.jpg"):
        assert Image.open(out / p.relative_to(scene_ds)).size == Image.open(p).size
    assert (out / "coco/images/cam01/000000.jpg").read_bytes() == (out / "mot/cam01/img1/000001.jpg").read_bytes()
    assert (out / "reid" / "query").is_dir()  # the layout is kept, empty folders included
    # geometry: refined outlines sit where the source ones are, far above a 3-px misalignment
    g = summary["geometry"]
    assert g["boxes"] > 0 and g["box_edge_f1"]["mean"] > 0.8
    assert g["box_edge_f1"]["mean"] > g["shifted_control"]["box_edge_f1"]["mean"] + 0.3
    # the refined set loads through the detection readers with the same boxes
    raw = COCOSource(str(scene_ds / "coco" / "annotations.json"), verify_checksums=False).load()
    ref = COCOSource(str(out / "coco" / "annotations.json"), kind="refined", verify_checksums=False).load()
    assert [[b.xyxy for b in s.boxes] for s in raw] == [[b.xyxy for b in s.boxes] for s in ref]
    assert ref[0].meta["kind"] == "refined" and ref[0].meta["refiner"]["run_id"] == rid
    mot = MOTSource(str(out / "mot" / "cam01"), verify_checksums=False).load()
    assert len(mot) == 4
    with pytest.raises(DataError, match="already exists"):
        refine_dataset(result["checkpoint"], scene_ds, out)


def test_refined_scenes_mix_into_the_detection_recipe(trained, scene_ds, tmp_path):
    from synthetic.detection_source import DEFAULT_LABEL_MAP, SceneDetectionSource
    from synthetic.refine.source import RefinedSceneSource
    from vision.data.detection_module import DetectionDataModule

    result, _ = trained
    kw = dict(scenes=3, cameras=1, frames=2, resolution=list(RES), world_size=15.0, progress=False)
    src = RefinedSceneSource(refiner=result["checkpoint"], cache_dir=str(tmp_path), **kw)
    refined = src.load()
    raw = SceneDetectionSource(str(tmp_path), **kw).load()
    assert [s.relpath for s in refined] == [s.relpath for s in raw]
    assert [[b.xyxy for b in s.boxes] for s in refined] == [[b.xyxy for b in s.boxes] for s in raw]
    assert refined[0].path != raw[0].path and refined[0].meta["kind"] == "refined"
    assert refined[0].meta["refiner"]["run_id"] == result["mlflow"]["run_id"]
    assert src.card()["refiner"]["mode"] == "cut"
    again = RefinedSceneSource(refiner=result["checkpoint"], cache_dir=str(tmp_path), device="auto", **kw)
    assert again.root == src.root and again.ensure() == src.root  # made once, reused (whatever the device)
    real = COCOSource(str(scene_ds / "coco" / "annotations.json"), label_map=DEFAULT_LABEL_MAP, verify_checksums=False)
    dm = DetectionDataModule({"real": real, "synthetic": again}, classes=["person", "vehicle"], preprocess={"size": [64, 64]},
                             batch_size=4, split={"train": 0.34, "val": 0.33, "test": 0.33},
                             assign={"real": "train"}, mix={"synthetic_fraction": 0.5}, steps_per_epoch=1)
    dm.setup("fit")
    assert dm.summary()["kinds"] == {"real": "real", "synthetic": "refined"}
    _, _, index = next(iter(dm.train_dataloader()))
    sources = {dm.splits["train"][int(i)].source for i in index}
    assert sources == {"real", "synthetic"}  # refined data fills the synthetic share of every batch


def test_camera_model_changes_appearance_never_geometry(scene_ds):
    from synthetic.refine.networks import CameraModel, build_generator

    cam = CameraModel(max_blur=1.5, max_noise=0.08)
    d = cam.describe()
    assert d["colour_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]] and d["gamma"] == [1, 1, 1]
    assert d["blur_sigma_px"] == pytest.approx(0.5) and d["read_noise"] < 0.002  # starts near the identity
    # a strong camera: 1.4 px blur, desaturated warm colours, darker tone curve, visible noise
    with torch.no_grad():
        cam.blur_logit.fill_(float(torch.logit(torch.tensor(1.4 / 1.5))))
        cam.colour.copy_(torch.tensor([[0.7, 0.2, 0.1], [0.15, 0.7, 0.15], [0.1, 0.2, 0.5]]))
        cam.offset.fill_(0.05)
        cam.log_gamma.fill_(0.3)
        cam.noise_logit.fill_(float(torch.logit(torch.tensor(0.5))))  # read = shot = 0.04
    img = read_image(next((scene_ds / "coco" / "images").rglob("*.jpg")))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        y = cam(x, seeds=[7])
        assert torch.equal(y, cam(x, seeds=[7])) and not torch.equal(y, cam(x, seeds=[8]))  # reproducible noise
    out = ((y[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    assert np.abs(out.astype(int) - img).mean() > 15  # a large change of appearance ...
    assert edge_f1(img, out)["f1"] > edge_f1(img, shift(img, 3, 3))["f1"] + 0.2  # ... with the edges in place
    # the noise has the modelled level, sqrt(read^2 + shot^2 * u), on a flat grey frame (whose clean output is
    # one value per channel: the noisy output's mean)
    with torch.no_grad():
        u = (cam(torch.zeros(1, 3, 64, 64), seeds=[1]) + 1) / 2
    want = torch.sqrt(0.04 ** 2 + 0.04 ** 2 * u.mean(dim=(0, 2, 3)))
    assert torch.allclose(u.std(dim=(0, 2, 3)), want, rtol=0.1)
    assert isinstance(build_generator(cam.config), CameraModel) and build_generator({"ngf": 4, "n_blocks": 1})


def test_camera_refiner_learns_the_real_cameras_look(scene_ds, real_folder, tmp_path):
    """Against 'real' frames that are noisy with a weak blue channel, the learned camera adds noise and lowers
    blue below green; it is logged to MLflow, recorded in the checkpoint and in the refined dataset. (A larger
    step than the default learns this in 300 steps; on real footage it drifts into tints, see bench/refine.py.)"""
    cfg = _cfg(tmp_path, f"data.synthetic=[{scene_ds}]", f"data.real=[{real_folder}]", "data.steps_per_epoch=150",
               "trainer.max_epochs=2", "run_name=cam", "model.mode=camera", "model.lr_camera=0.02")
    result = train(cfg)
    meta = load_checkpoint(result["checkpoint"], task="refiner")["vision"]["refiner"]
    cam = meta["camera"]
    assert meta["mode"] == "camera" and meta["generator"]["type"] == "camera"
    assert cam["read_noise"] + cam["shot_noise"] > 0.02  # from 0.003 at the start: the real frames are noisy
    refiner = Refiner(result["checkpoint"])
    grey = np.full((RES[1], RES[0], 3), 128, np.uint8)
    r, g, b = refiner.refine([grey])[0].reshape(-1, 3).mean(0)
    assert b < g and b < 128  # the real frames' blue is 0.6x, their green 1.1x
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    hist = client.get_metric_history(result["mlflow"]["run_id"], "camera/read_noise")
    assert len(hist) == 2 and hist[-1].value == pytest.approx(cam["read_noise"], abs=1e-4)
    summary = refine_dataset(result["checkpoint"], scene_ds, tmp_path / "refined")
    assert summary["refiner"]["camera"] == cam and summary["geometry"]["box_edge_f1"]["mean"] > 0.6
    doc = json.loads((tmp_path / "refined" / "coco" / "annotations.json").read_text())
    assert doc["images"][0]["refiner"]["camera"] == cam
    first = next((scene_ds / "coco" / "images").rglob("*.jpg"))
    again = refiner.refine([read_image(first)])[0]  # same frame, same noise: refinement is reproducible
    assert np.array_equal(again, refiner.refine([read_image(first)])[0])


def test_geometry_metric_high_for_identity_low_for_shift(scene_ds):
    img = read_image(next((scene_ds / "coco" / "images").rglob("*.jpg")))
    assert edge_f1(img, img)["f1"] == 1.0
    contrast = (img.astype(np.float32) * 0.6 + 50).astype(np.uint8)  # appearance change, same geometry
    assert edge_f1(img, contrast)["f1"] > 0.85
    assert edge_f1(img, shift(img, 3, 3))["f1"] < 0.5
    g = dataset_geometry(scene_ds, scene_ds)
    assert g["box_edge_f1"]["mean"] == 1.0 and g["shifted_control"]["box_edge_f1"]["mean"] < 0.6


def test_self_regularization_ties_colour_not_texture():
    from synthetic.refine.module import RefinerModule

    m = RefinerModule(ngf=4, n_blocks=0, ndf=8, nce_layers=[0, 1], num_patches=8, mlp_dim=8, lambda_self_reg=1.0)
    x = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 0.2 - 0.1  # fine texture, zero mean
    assert float(m.self_reg(x, x + 0.1)) == pytest.approx(0.1, abs=1e-5)  # a global tint costs its full size
    assert float(m.self_reg(x, x + checker)) < 1e-6  # high-frequency change is free


def test_reid_separability_of_identical_crops(scene_ds):
    r = reid_separability(scene_ds, scene_ds, min_height=12, min_visible=0.5)
    assert r["crops"] >= 4 and r["identities"] >= 2
    assert r["own_crop_top1"] == 1.0 and r["source"] == r["refined"]


def test_domain_classifier_tells_apart_distinct_domains(scene_ds, real_folder):
    syn = load_frames([str(scene_ds)], "synthetic").images
    real = load_frames([str(real_folder)], "real").images
    r = domain_accuracy(syn[:4], real[:4], syn[4:], real[4:], crop_size=32, steps=40, batch_size=16)
    assert r["accuracy"] >= 0.9 and r["held_out_frames"] == {"synthetic": 4, "real": 4}


# -- bad input -----------------------------------------------------------------------------------
def test_mixed_sizes_and_channels_fail_before_training(tmp_path, real_folder):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (64, 64)).save(mixed / "a.png")
    Image.new("RGB", (80, 64)).save(mixed / "b.png")
    with pytest.raises(DataError, match=r"mixed sizes: .*b\.png is 80x64 but .*a\.png is 64x64"):
        train(_cfg(tmp_path, f"data.synthetic=[{mixed}]", f"data.real=[{real_folder}]", "logger=none"))
    (mixed / "b.png").unlink()
    Image.new("L", (64, 64)).save(mixed / "c.png")
    with pytest.raises(DataError, match=r"mixed channels: .*c\.png has 1 channel"):
        load_frames([str(mixed)], "data.real")
    assert not (tmp_path / "outputs").exists()  # nothing was started


@pytest.mark.parametrize("override, message", [
    ("model.mode=pix2pix", "model.mode must be one of"),
    ("data.crop_size=16", "too small for a 3-layer PatchGAN"),
    ("data.crop_size=34", "multiple of 4"),
    ("model.nce_layers=[0,9]", "model.nce_layers must be indices in"),
    ("model.mode=camera model.max_blur=0", "model.max_blur / model.max_noise"),
])
def test_bad_settings_fail_before_any_data_is_read(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(_cfg(tmp_path, f"data.synthetic=[{tmp_path / 'absent'}]", "logger=none", *override.split()))


def test_too_few_real_frames_for_the_crop_size(tmp_path, scene_ds):
    few = tmp_path / "few"
    few.mkdir()
    for i in range(2):
        Image.new("RGB", (96, 72), (i * 50, 90, 120)).save(few / f"{i}.png")
    with pytest.raises(DataError, match=r"data.real: too few frames for crop size 64: 2 frame\(s\) of 96x72 give 2"):
        train(_cfg(tmp_path, f"data.synthetic=[{scene_ds}]", f"data.real=[{few}]", "data.crop_size=64",
                   "data.min_crops=16", "logger=none"))
    with pytest.raises(DataError, match="96x72.*smaller than the crop size 80"):
        train(_cfg(tmp_path, f"data.synthetic=[{scene_ds}]", f"data.real=[{few}]", "data.crop_size=80",
                   "logger=none"))


def test_checkpoint_from_another_resolution_is_refused(trained, tmp_path, real_folder):
    from synthetic.refine.source import RefinedSceneSource

    result, _ = trained
    big = _scene(tmp_path / "big", resolution=(192, 112), formats=("coco",), duration=1)
    with pytest.raises(DataError, match=r"frame is 192x112 but the refiner .* trained on 160x96 frames"):
        refine_dataset(result["checkpoint"], big, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="different resolution"):
        RefinedSceneSource(refiner=result["checkpoint"], cache_dir=str(tmp_path / "cache"), scenes=1, cameras=1,
                           frames=1, resolution=[320, 180])
    assert not (tmp_path / "cache").exists()  # refused before any scene was generated
    with pytest.raises(CheckpointError, match="different resolution"):  # continuing training on other frames
        train(_cfg(tmp_path, f"data.synthetic=[{big}]", f"data.real=[{real_folder}]", "logger=none",
                   f"resume={result['checkpoint']}"))
    with pytest.raises(CheckpointError, match="trained on 32-px crops"):
        train(_cfg(tmp_path, f"data.synthetic=[{big}]", f"data.real=[{real_folder}]", "logger=none",
                   "data.crop_size=48", f"resume={result['checkpoint']}"))
    # the command line: one error line naming the problem, exit code 2, nothing written
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([PY, "-m", "synthetic.refine", "apply", f"refiner={result['checkpoint']}",
                           f"input={big}", f"output={tmp_path / 'cli'}", f"paths.work_dir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: DataError" in proc.stderr and "different resolution" in proc.stderr
    assert not (tmp_path / "cli").exists()


def test_refiner_device_choice(trained):
    """``auto`` takes the GPU when there is one; a GPU asked for where there is none, or a non-device, is refused."""
    from synthetic.refine.source import RefinedSceneSource

    result, _ = trained
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match="only cpu, cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU here"):
            Refiner(result["checkpoint"], device="cuda")
        with pytest.raises(ConfigError, match="no CUDA GPU here"):  # before any scene is generated
            RefinedSceneSource(refiner=result["checkpoint"], device="cuda:0", scenes=1, cameras=1, frames=1,
                               resolution=list(RES), progress=False)
    assert Refiner(result["checkpoint"], device="auto").refine([np.zeros((RES[1], RES[0], 3), np.uint8)])[0].shape \
        == (RES[1], RES[0], 3)
