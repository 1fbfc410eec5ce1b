"""The single-stage detector's model core: shapes, location layout, assignment/loss, numpy
decoding + NMS, overfitting one image, ONNX export parity and int8 QDQ quantization."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vision.models.detector import DetectionLoss, build_detector, make_points
from vision.runtime.detect_decode import batched_nms, box_iou, decode_numpy, nms

SIZE = (320, 320)


def _empty_target():
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_output_shapes(arch):
    torch.manual_seed(0)
    m = build_detector(arch, num_classes=3, width_mult=0.25, input_size=(256, 320)).eval()
    a = (32 * 40) + (16 * 20) + (8 * 10)
    with torch.no_grad():
        cls, box, q = m(torch.randn(2, 3, 256, 320))
    assert cls.shape == (2, a, 3) and box.shape == (2, a, 4) and q.shape == (2, a)
    assert (box >= 0).all() and torch.isfinite(cls).all()
    assert m.points.shape == (a, 2)
    with pytest.raises(ValueError):
        m(torch.randn(1, 3, 320, 320))


def test_points_layout():
    pts, strides = make_points((64, 96), (8, 16, 32))
    n8, n16, n32 = 8 * 12, 4 * 6, 2 * 3
    assert pts.shape == (n8 + n16 + n32, 2)
    assert strides[:n8].eq(8).all() and strides[n8:n8 + n16].eq(16).all() and strides[-n32:].eq(32).all()
    # row-major per level, centres at (i + 0.5) * stride
    assert pts[0].tolist() == [4.0, 4.0] and pts[1].tolist() == [12.0, 4.0] and pts[12].tolist() == [4.0, 12.0]
    assert pts[n8].tolist() == [8.0, 8.0] and pts[-1].tolist() == [80.0, 48.0]
    m = build_detector("resnet18", width_mult=0.25, input_size=(64, 96), strides=(8, 16))
    assert m.points.shape == (n8 + n16, 2)
    with torch.no_grad():
        assert m.eval()(torch.zeros(1, 3, 64, 96))[0].shape == (1, n8 + n16, 2)


def test_assignment_levels_small_people_on_stride8():
    m = build_detector("resnet18", width_mult=0.25)
    loss = DetectionLoss.for_model(m)
    boxes = torch.tensor([[100.0, 100.0, 112.0, 126.0],   # a 12x26 person
                          [20.0, 20.0, 80.0, 80.0],        # 60 px
                          [150.0, 120.0, 300.0, 300.0],    # 150-180 px
                          [200.0, 20.0, 205.0, 24.0]])     # tiny 5x4: falls back to its nearest location
    gt, ltrb, ctr = loss.assign(boxes, torch.tensor([0, 1, 0, 1]))
    for j, want in enumerate([{8}, {8}, {16, 32}, {8}]):
        strides = set(m.point_strides[gt == j].int().tolist())
        assert strides and strides <= want, (j, strides)
    pos = gt >= 0
    assert (ltrb[pos] >= 0).all() and ((ctr[pos] > 0) & (ctr[pos] <= 1)).all() and (ctr[~pos] == 0).all()


def test_zero_box_image_finite_loss():
    torch.manual_seed(0)
    m = build_detector("resnet18", width_mult=0.25)
    loss_fn = DetectionLoss.for_model(m)
    out = m(torch.randn(2, 3, *SIZE))
    losses = loss_fn(out, [_empty_target(), _empty_target()])
    assert all(torch.isfinite(v).all() for v in losses.values())
    losses["loss"].backward()
    mixed = loss_fn(m(torch.randn(2, 3, *SIZE)),
                    [_empty_target(), {"boxes": torch.tensor([[10.0, 10.0, 40.0, 60.0]]), "labels": torch.tensor([1])}])
    assert torch.isfinite(mixed["loss"]) and mixed["num_pos"] > 0


def _synthetic_image():
    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 0.15, size=(3, *SIZE)).astype(np.float32)
    boxes = np.array([[60, 70, 76, 98],       # ~24 px person (16x28)
                      [180, 40, 240, 80],      # ~60 px vehicle (60x40)
                      [120, 150, 220, 300]],   # ~150 px person (100x150)
                     dtype=np.float32)
    labels = np.array([0, 1, 0])
    colours = {0: (1.5, -1.0, 0.5), 1: (-1.0, 1.5, -0.5)}
    for (x1, y1, x2, y2), lab in zip(boxes.astype(int), labels):
        img[:, y1:y2, x1:x2] = np.array(colours[int(lab)], dtype=np.float32)[:, None, None]
    return torch.from_numpy(img)[None], boxes, labels


def test_overfit_one_image_and_decode():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_detector("resnet18", num_classes=2, width_mult=0.25)
    loss_fn = DetectionLoss.for_model(model)
    x, boxes, labels = _synthetic_image()
    target = [{"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    model.train()
    for _ in range(30):  # decodes right after ~10-20 steps; 30 leaves a margin and keeps the test fast
        losses = loss_fn(model(x), target)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(losses["loss"].item())
    assert np.isfinite(history).all()
    print('overfit loss', [round(h, 3) for h in history[:5]], '...', [round(h, 3) for h in history[-5:]])
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5]), history
    # batch-1 training: set BN running statistics to this image's (one pass with momentum 1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 1.0
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        cls, box, q = model(x)
    det_boxes, det_scores, det_labels = decode_numpy(cls.numpy(), box.numpy(), q.numpy(), model.points.numpy(),
                                                     score_threshold=0.2)[0]
    assert det_boxes.dtype == np.float32 and len(det_boxes) == len(det_scores) == len(det_labels)
    for b, lab in zip(boxes, labels):
        same = det_labels == lab
        assert same.any(), f"no detection of class {lab}"
        assert box_iou(b[None], det_boxes[same]).max() > 0.5, (b, det_boxes[same], det_scores[same])


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_backbone_from_classifier_checkpoint(tmp_path, arch):
    from vision.models.classifiers import build_classifier

    torch.manual_seed(0)
    clf = build_classifier(arch, num_classes=5, width_mult=0.25)
    path = tmp_path / "clf.pt"
    torch.save({"state_dict": {"model." + k: v for k, v in clf.state_dict().items()}}, path)
    det = build_detector(arch, width_mult=0.25, pretrained=str(path))
    first = "conv1.weight" if arch == "resnet18" else "features.0.0.weight"
    assert torch.equal(det.backbone.state_dict()[first], clf.state_dict()[first])


def test_decode_module_is_torch_free():
    import subprocess
    import sys

    code = ("import sys; import vision.runtime.detect_decode as d; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(d.decode_numpy.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert r.returncode == 0, r.stderr


def test_numpy_nms_matches_torchvision():
    from torchvision.ops import batched_nms as tv_batched_nms, nms as tv_nms

    rng = np.random.default_rng(1)
    for _ in range(5):
        n = 300
        xy = rng.uniform(0, 200, size=(n, 2))
        wh = rng.uniform(5, 60, size=(n, 2))
        b = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        s = rng.uniform(0, 1, size=n).astype(np.float32)
        lab = rng.integers(0, 3, size=n)
        for thr in (0.3, 0.5, 0.7):
            ref = tv_nms(torch.from_numpy(b), torch.from_numpy(s), thr).numpy()
            np.testing.assert_array_equal(nms(b, s, thr), ref)
            ref = tv_batched_nms(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(lab), thr).numpy()
            np.testing.assert_array_equal(batched_nms(b, s, lab, thr), ref)
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_decode_numpy_scores_and_limits():
    points = np.array([[10.0, 10.0], [50.0, 50.0], [52.0, 50.0]], dtype=np.float32)
    cls = np.array([[[5.0, -9.0], [4.0, 3.0], [3.0, -9.0]]], dtype=np.float32)
    ltrb = np.full((1, 3, 4), 5.0, dtype=np.float32)
    q = np.array([[5.0, 5.0, 5.0]], dtype=np.float32)
    boxes, scores, labels = decode_numpy(cls, ltrb, q, points, score_threshold=0.5, nms_iou=0.5)[0]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    # loc 2 (class 0) is suppressed by loc 1 (class 0); loc 1 class 1 survives (other class)
    np.testing.assert_allclose(scores, np.sqrt(sig(np.array([5.0, 4.0, 3.0])) * sig(5.0)), rtol=1e-5)
    assert labels.tolist() == [0, 0, 1]
    np.testing.assert_allclose(boxes[0], [5, 5, 15, 15])
    agn = decode_numpy(cls, ltrb, q, points, score_threshold=0.5, class_agnostic=True)[0]
    assert agn[2].tolist() == [0, 0] and len(decode_numpy(cls, ltrb, q, points, max_detections=1)[0][0]) == 1
    empty = decode_numpy(cls - 100, ltrb, q, points)[0]
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,) and empty[2].shape == (0,)


def test_onnx_export_parity_and_int8(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    quant = pytest.importorskip("onnxruntime.quantization")
    import onnx

    torch.manual_seed(0)
    size = (128, 160)  # small fixed shape keeps the test fast; the graph is the same as at 320
    model = build_detector("resnet18", num_classes=2, width_mult=0.25, input_size=size)
    with torch.no_grad():  # stand-in for trained BN statistics, so that Conv+BN folding is exercised
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(1, 3, *size)
    path = tmp_path / "det.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["cls_logits", "box_ltrb", "quality"])
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Shape", "Gather", "Range", "NonZero", "Loop", "If"}, ops
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert np.abs(g - r).max() < 1e-4

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"images": np.random.default_rng(i).normal(size=(1, 3, *size)).astype(np.float32)}
                            for i in range(4)])

        def get_next(self):
            return next(self.it, None)

    qpath = tmp_path / "det.int8.onnx"
    quant.quantize_static(str(path), str(qpath), Reader(), quant_format=quant.QuantFormat.QDQ, per_channel=True,
                          activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8)
    qops = {n.op_type for n in onnx.load(str(qpath)).graph.node}
    assert "QuantizeLinear" in qops and "DequantizeLinear" in qops
    qsess = ort.InferenceSession(str(qpath), so, providers=["CPUExecutionProvider"])
    qout = qsess.run(None, {"images": x.numpy()})
    assert [o.shape for o in qout] == [r.shape for r in ref]
    assert all(np.isfinite(o).all() for o in qout)


def test_output_nodes_keep_every_head_output_in_float(tmp_path):
    """``keep_fp32: [outputs]`` covers the three head output convolutions of every level and the
    reshapes/concatenations after them, and nothing of the backbone."""
    import onnx

    from vision.export.onnx_export import to_onnx
    from vision.export.quantize import output_nodes
    from vision.models.detector import build_detector

    m = build_detector("resnet18", 2, 0.25, (64, 96))
    p = to_onnx(m, (1, 3, 64, 96), tmp_path / "d.onnx", output_names=("cls_logits", "box_ltrb", "quality"))
    graph = onnx.load(str(p)).graph
    kept = set(output_nodes(graph))
    convs = {n.name for n in graph.node if n.op_type == "Conv" and n.name in kept}
    assert len(convs) == 9  # cls/box/quality outputs x 3 levels
    assert all(any(k in c for k in ("cls_out", "box_out", "quality_out")) for c in convs)
    assert not any("backbone" in n or "neck" in n for n in kept)
