"""The runtime ships alone: ``scripts/build_runtime_wheel.py`` builds the ``vision-runtime`` wheel, it installs into
a fresh virtual environment without torch (or MLflow), and runs a classifier and a detector bundle made here by the
real train.py / export.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, make_tiny_folder, run_entry, tiny_train_args

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site packages) with only the runtime wheel and its dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "build_runtime_wheel.py"), "--out-dir",
                           str(root / "dist")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wheel = Path(proc.stdout.strip().splitlines()[-1])
    assert wheel.name.startswith("vision_runtime-") and wheel.suffix == ".whl"
    names = zipfile.ZipFile(wheel).namelist()
    code = sorted(n for n in names if not n.startswith("vision_runtime-"))
    assert code and all(n == "vision/__init__.py" or n.startswith("vision/runtime/") for n in code), code
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = sorted(line.split(":", 1)[1].strip().split(">")[0].split("<")[0].split(";")[0].strip()
                      for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert requires == ["numpy", "onnxruntime", "opencv-python-headless", "pillow", "pyyaml"]

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=_clean_env())
    py = venv / "bin" / "python"
    cfg = subprocess.run([str(py), "-c", "import sys; print(sys.prefix != sys.base_prefix)"], capture_output=True,
                         text=True, env=_clean_env(), cwd=root)
    assert cfg.stdout.strip() == "True"
    install = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, timeout=900, env=_clean_env(), cwd=root)
    if install.returncode != 0:
        out = install.stdout + install.stderr
        if any(s in out for s in ("No matching distribution", "Could not find a version", "NewConnectionError",
                                  "Temporary failure in name resolution", "Network is unreachable")):
            pytest.skip(f"the runtime's dependencies cannot be fetched here (no registry or cache): {out[-800:]}")
        raise AssertionError(f"pip install of the runtime wheel failed:\n{out[-4000:]}")
    return venv


def _device(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=_clean_env())


def test_the_device_environment_has_no_torch(device_venv, tmp_path):
    for mod in ("torch", "torchvision", "mlflow", "lightning", "hydra"):
        proc = _device(device_venv, "-c", f"import {mod}", cwd=tmp_path)
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, mod
    proc = _device(device_venv, "-c", "import vision, vision.runtime.track, cv2, onnxruntime, PIL, yaml, numpy; "
                                      "print(vision.__file__)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(device_venv) in proc.stdout  # the installed copy, not the repository
    proc = _device(device_venv, "-c", "import vision.export", cwd=tmp_path)
    assert proc.returncode != 0  # only the runtime is shipped


def test_classifier_and_detector_bundles_run_on_the_device(device_venv, tmp_path):
    from test_detection_recipe import make_toy_coco

    work = tmp_path / "work"
    work.mkdir()
    # a classifier and a detector, trained and exported for real (tiny, untracked)
    folder = make_tiny_folder(work / "tiny")
    run_entry("train.py", work, *tiny_train_args(folder, "trainer.max_epochs=2", "run_name=cls", "logger=none"))
    run_entry("export.py", work, "checkpoint=outputs/cls", f"output_dir={work / 'cls_bundle'}",
              "calibration.num_samples=16", "progress=false")
    toy = make_toy_coco(work / "toy", n=32)
    run_entry("train.py", work, "experiment=detection_synthetic", "data=synthetic_scenes", "~data.sources.synthetic",
              "+data.sources.toy._target_=vision.data.detection_sources.COCOSource",
              f"+data.sources.toy.annotations={toy / 'annotations.json'}", "+data.sources.toy.verify_checksums=false",
              "data.preprocess.size=[96,128]", "model.width_mult=0.25", "data.batch_size=8", "data.steps_per_epoch=6",
              "data.split.train=0.6", "data.split.val=0.15", "data.split.test=0.25", "data.augment=[]",
              "task.optimizer.lr=0.01", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=none",
              "run_name=det", timeout=900)
    run_entry("export.py", work, "checkpoint=outputs/det", f"output_dir={work / 'det_bundle'}",
              "calibration.num_samples=8", "parity.max_int8_drop=1.0", "parity.max_fp32_ap_diff=1.0", "progress=false",
              timeout=600)
    device = tmp_path / "device"  # a folder outside the repository: nothing of it is importable from here
    device.mkdir()

    out = device / "cls.jsonl"
    proc = _device(device_venv, "-m", "vision.runtime", str(work / "cls_bundle"), str(folder), "--out", str(out),
                   cwd=device)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 36
    assert all(r["label"] in ("blobs", "flat", "stripes") and 0.0 <= r["score"] <= 1.0 and len(r["top_k"]) == 3
               for r in recs)

    out = device / "det.jsonl"
    script = device_venv / "bin" / "vision-runtime"  # the console script of the wheel
    proc = subprocess.run([str(script), str(work / "det_bundle"), str(toy.parent / "src"), "--out", str(out),
                           "--precision", "int8", "--score-threshold", "0.05", "--timings", str(device / "t.json")],
                          capture_output=True, text=True, timeout=600, cwd=device, env=_clean_env())
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 32 and all(set(r) == {"file", "detections"} for r in recs)
    dets = [d for r in recs for d in r["detections"]]
    assert dets and all(d["label"] in ("person", "vehicle") and len(d["box"]) == 4 and d["score"] >= 0.05
                        for d in dets)
    assert json.loads((device / "t.json").read_text())["frames"] == 32

    # a changed model file is refused on the device too
    bad = work / "cls_bundle" / "model_int8.onnx"
    data = bytearray(bad.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    proc = _device(device_venv, "-m", "vision.runtime", str(work / "cls_bundle"), str(folder), cwd=device)
    assert proc.returncode == 2 and "sha256 mismatch" in proc.stderr
    # a models:/ URI needs no MLflow on the device: an unreachable server is a clear error
    proc = _device(device_venv, "-m", "vision.runtime", "models:/cam@production", str(folder), "--tracking-uri",
                   "http://127.0.0.1:9", cwd=device)
    assert proc.returncode == 2 and "cannot reach the MLflow server at http://127.0.0.1:9" in proc.stderr
