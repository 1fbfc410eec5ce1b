"""The shared preprocessing spec and the bundle checks of the runtime (torch-free code)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vision.runtime.bundle import BundleError, load_bundle
from vision.runtime.preprocess import ImageReadError, PreprocessSpec, preprocess, read_image, resize_image


def test_spec_roundtrip_and_validation():
    spec = PreprocessSpec(size=(48, 64), resize="letterbox", mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    assert PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="resize"):
        PreprocessSpec(resize="squash")
    with pytest.raises(ValueError, match="size"):
        PreprocessSpec(size=(0, 10))


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "center_crop"])
def test_resize_modes_give_the_input_size(mode):
    img = np.zeros((90, 160, 3), np.uint8)
    img[:, :80] = 255
    out, geo = resize_image(img, PreprocessSpec(size=(64, 64), resize=mode))
    assert out.shape == (64, 64, 3)
    if mode == "letterbox":
        assert geo["pad_y"] > 0 and (out[0] == 114).all()


def test_normalize_and_channel_order():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255
    rgb = preprocess(img, PreprocessSpec(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1)))
    bgr = preprocess(img, PreprocessSpec(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1), channel_order="BGR"))
    assert rgb.shape == (3, 8, 8) and rgb.dtype == np.float32
    assert rgb[0].mean() == 1.0 and bgr[2].mean() == 1.0 and bgr[0].mean() == 0.0


def test_read_image_errors_name_the_file(tmp_path):
    p = tmp_path / "x.jpg"
    Image.fromarray(np.full((50, 50, 3), 128, np.uint8)).save(p)
    assert read_image(p).shape == (50, 50, 3)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=r"x\.jpg: corrupt or truncated"):
        read_image(p)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_bundle_json_edits_are_refused(tmp_path):
    from vision.export.bundle_writer import write_bundle

    f = tmp_path / "m.onnx"
    f.write_bytes(b"not really onnx")
    doc = {"task": "classification", "labels": ["a", "b"], "preprocess": PreprocessSpec().to_dict(),
           "models": {"fp32": {"file": "model_fp32.onnx"}}}
    b = write_bundle(tmp_path / "b", {"model_fp32.onnx": f}, doc)
    assert load_bundle(b).labels == ["a", "b"]
    meta = b / "bundle.json"
    d = json.loads(meta.read_text())
    d["labels"] = ["b", "a"]
    meta.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="integrity check failed"):
        load_bundle(b)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(FileExistsError):
        write_bundle(tmp_path / "b", {"model_fp32.onnx": f}, doc)


def _identity_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_session_says_when_a_requested_provider_is_missing(tmp_path, caplog):
    """Asking for the GPU where onnxruntime has no CUDA provider runs on the CPU, and says so."""
    import onnxruntime as ort

    from vision.runtime.bundle import create_session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    model = _identity_onnx(tmp_path / "identity.onnx")
    with caplog.at_level("WARNING", logger="vision.runtime.bundle"):
        sess = create_session(model, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider not in this onnxruntime build" in caplog.text
    assert "identity.onnx runs on CPUExecutionProvider" in caplog.text
    out = sess.run(None, {"x": np.array([[1.0, 2.0, 3.0]], np.float32)})[0]
    assert out.tolist() == [[1.0, 2.0, 3.0]]
    caplog.clear()
    with caplog.at_level("WARNING", logger="vision.runtime.bundle"):
        create_session(model)  # the default: CPU, no warning
    assert caplog.text == ""
    with pytest.raises(BundleError, match="none of the execution providers"):
        create_session(model, ["CUDAExecutionProvider"])
