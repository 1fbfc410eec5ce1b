"""Object detection with an edge bundle (numpy + onnxruntime + Pillow only, no torch).

    det = ObjectDetector("bundles/detector", precision="fp32")
    for d in det.detect(rgb):            # rgb: HxWx3 uint8
        print(d["label"], d["score"], d["box"])   # box: [x1, y1, x2, y2] in rgb's pixels
    print(det.timings())                 # mean / p50 / p95 per stage, end-to-end fps

The bundle (``task: detection``, see :mod:`vision.runtime.detect_decode` for the contract) gives
the preprocessing (letterbox), the graph's output names and the decoding parameters. A frame is
letterboxed to the network input, run, decoded (:func:`decode_numpy` on the locations of
:func:`make_points`), mapped back to the frame (pad removed, scale undone) and clipped to it.
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vision.runtime.bundle import BUNDLE_FILE, Bundle, BundleError, create_session, load_bundle
from vision.runtime.detect_decode import decode_numpy, make_points
from vision.runtime.preprocess import normalize, resize_image

OUTPUT_ROLES = ("cls_logits", "box_ltrb", "quality")
DECODE_DEFAULTS: dict[str, Any] = {"strides": [8, 16, 32], "score_threshold": 0.25, "nms_iou": 0.5,
                                   "max_detections": 100, "class_agnostic": False, "pre_nms_topk": 1000}
STAGES = ("read", "preprocess", "inference", "postprocess")
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _stats(values) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean_ms": round(float(a.mean()), 3), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p95_ms": round(float(np.percentile(a, 95)), 3)}


class StageTimings:
    """Per-frame milliseconds of each stage (the last ``window`` frames) and their end-to-end sum."""

    def __init__(self, window: int = 100_000) -> None:
        self.window = window
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self._ms: dict[str, deque] = {s: deque(maxlen=self.window) for s in STAGES}
        self._e2e: deque = deque(maxlen=self.window)

    def add_frame(self, **stage_ms: float | None) -> None:
        total = 0.0
        for stage, ms in stage_ms.items():
            if ms is None:
                continue
            self._ms[stage].append(float(ms))
            total += float(ms)
        self._e2e.append(total)
        self.frames += 1

    def summary(self) -> dict[str, Any]:
        """``{"frames", "stages": {stage: {mean_ms, p50_ms, p95_ms}}, "end_to_end": {...}, "fps"}``;
        stages never recorded (``read`` when frames came as arrays) are left out."""
        out: dict[str, Any] = {"frames": self.frames, "stages": {}}
        for s in STAGES:
            if self._ms[s]:
                out["stages"][s] = _stats(self._ms[s])
        if self._e2e:
            out["end_to_end"] = _stats(self._e2e)
            mean = float(np.mean(self._e2e))
            out["fps"] = round(1000.0 / mean, 2) if mean > 0 else None
        else:
            out["end_to_end"], out["fps"] = None, None
        return out

    def line(self) -> str:
        """One human-readable summary line."""
        s = self.summary()
        if not s["frames"]:
            return "timings: no frames"
        parts = [f"{k} {v['mean_ms']:.1f}" for k, v in s["stages"].items()]
        e2e = s["end_to_end"]
        return (f"timings (mean ms): {', '.join(parts)}; end-to-end {e2e['mean_ms']:.1f} ms "
                f"(p95 {e2e['p95_ms']:.1f}) = {s['fps']:.1f} fps over {s['frames']} frames")


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"detect() expects a uint8 image, got dtype {rgb.dtype}")
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    elif rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = rgb[..., :3]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise ValueError(f"detect() expects an HxWx3 RGB image, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def to_image_coords(boxes: np.ndarray, geo: dict[str, float], image_hw: tuple[int, int]) -> np.ndarray:
    """xyxy boxes in network-input pixels -> the original image's pixels: undo the geometry
    :func:`resize_image` returned (subtract the pad, divide by the scale) and clip to the image."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 0::2] = (b[:, 0::2] - geo["pad_x"]) / geo["scale_x"]
    b[:, 1::2] = (b[:, 1::2] - geo["pad_y"]) / geo["scale_y"]
    h, w = image_hw
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    return b.astype(np.float32)


class ObjectDetector:
    """Runs a detection bundle on HxWx3 uint8 RGB frames; boxes come back in the frame's pixels."""

    def __init__(self, bundle: Bundle | str | Path, precision: str = "int8",
                 providers: Sequence[str] | None = None, threads: int | None = None,
                 score_threshold: float | None = None, warmup: bool = True) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        doc = self.bundle.doc
        where = self.bundle.root / BUNDLE_FILE
        if self.bundle.task != "detection":
            raise BundleError(f"{where}: a {self.bundle.task!r} bundle, not a detection bundle")
        self.precision = precision
        self.labels = self.bundle.labels
        self.spec = self.bundle.preprocess
        model_path = self.bundle.model_path(precision)
        self.session = create_session(model_path, providers, threads)
        mdoc = doc["models"][precision]

        # input: name, fixed spatial size = the preprocessing size, batch (0: dynamic), dtype
        inputs = {i.name: i for i in self.session.get_inputs()}
        want = (mdoc.get("input") or {}).get("name")
        if want is not None and want not in inputs:
            raise BundleError(f"{where}: input {want!r} is not an input of {model_path.name} (has {list(inputs)})")
        inp = inputs[want] if want is not None else self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise BundleError(f"{where}: {model_path.name} input {inp.name!r} has shape {shape}, expected [N, 3, H, W]")
        if all(isinstance(v, int) for v in shape[2:]) and tuple(shape[2:]) != tuple(self.spec.size):
            raise BundleError(f"{where}: the graph input is {shape[2:]} (H, W) but preprocess.size is "
                              f"{list(self.spec.size)}")
        self.batch = int(shape[0]) if isinstance(shape[0], int) else 0
        self.input_dtype = _ORT_DTYPES.get(inp.type, np.float32)

        # outputs by name, as the bundle lists them
        graph_outputs = [o.name for o in self.session.get_outputs()]
        listed = list(mdoc.get("outputs") or OUTPUT_ROLES)
        missing = [r for r in OUTPUT_ROLES if r not in listed or r not in graph_outputs]
        if missing:
            raise BundleError(f"{where}: detector outputs {missing} missing (bundle lists {listed}, "
                              f"{model_path.name} has {graph_outputs})")
        self.output_names = list(OUTPUT_ROLES)

        # decoding
        dec = {**DECODE_DEFAULTS, **(doc.get("decode") or {})}
        input_size = tuple(int(v) for v in dec.get("input_size", self.spec.size))
        if input_size != tuple(self.spec.size):
            raise BundleError(f"{where}: decode.input_size {list(input_size)} differs from preprocess.size "
                              f"{list(self.spec.size)}")
        self.input_size = input_size
        self.strides = [int(s) for s in dec["strides"]]
        self.points = make_points(input_size, self.strides)
        self.decode_params = {"score_threshold": float(dec["score_threshold"] if score_threshold is None
                                                       else score_threshold),
                              "nms_iou": float(dec["nms_iou"]), "max_detections": int(dec["max_detections"]),
                              "class_agnostic": bool(dec["class_agnostic"]), "pre_nms_topk": int(dec["pre_nms_topk"])}
        out_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        a = out_shapes["cls_logits"][1] if len(out_shapes["cls_logits"]) == 3 else None
        c = out_shapes["cls_logits"][2] if len(out_shapes["cls_logits"]) == 3 else None
        if isinstance(a, int) and a != len(self.points):
            raise BundleError(f"{where}: the graph has {a} locations, decode.input_size {list(input_size)} with "
                              f"strides {self.strides} gives {len(self.points)}")
        if isinstance(c, int) and c != len(self.labels):
            raise BundleError(f"{where}: the graph has {c} classes but the bundle lists {len(self.labels)} labels")
        self._timings = StageTimings()
        if warmup:  # the first run initialises the session: keep it out of the timings
            self._run(np.zeros((max(self.batch, 1), 3, *self.spec.size), self.input_dtype))

    @property
    def score_threshold(self) -> float:
        return self.decode_params["score_threshold"]

    # -- stages ------------------------------------------------------------------------------------
    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        resized, geo = resize_image(rgb, self.spec)
        return normalize(resized, self.spec).astype(self.input_dtype, copy=False), geo

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """x: N x 3 x H x W -> [cls_logits, box_ltrb, quality] for N images (padded to the graph batch)."""
        if not self.batch:
            return self.session.run(self.output_names, {self.input_name: x})
        outs: list[list[np.ndarray]] = [[], [], []]
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            for k, o in enumerate(self.session.run(self.output_names, {self.input_name: chunk})):
                outs[k].append(o[:n])
        return [np.concatenate(o) for o in outs]

    def _postprocess(self, cls: np.ndarray, box: np.ndarray, q: np.ndarray, geo: dict[str, float],
                     hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, labels = decode_numpy(cls[None], box[None], q[None], self.points, image_size=self.input_size,
                                             **self.decode_params)[0]
        boxes = to_image_coords(boxes, geo, hw)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # boxes lying wholly in the padding
        return boxes[keep], scores[keep], labels[keep]

    def _format(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
        return [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "label": self.labels[int(k)]}
                for b, s, k in zip(boxes, scores, labels)]

    # -- public API --------------------------------------------------------------------------------
    def _detect_one(self, rgb: np.ndarray, read_ms: float | None, fmt: bool):
        rgb = _as_rgb(rgb)
        t0 = time.perf_counter()
        x, geo = self._prepare(rgb)
        t1 = time.perf_counter()
        cls, box, q = self._run(x[None])
        t2 = time.perf_counter()
        res = self._postprocess(cls[0], box[0], q[0], geo, rgb.shape[:2])
        if fmt:
            res = self._format(*res)
        t3 = time.perf_counter()
        self._timings.add_frame(read=read_ms, preprocess=(t1 - t0) * 1e3, inference=(t2 - t1) * 1e3,
                                postprocess=(t3 - t2) * 1e3)
        return res

    def detect_arrays(self, rgb: np.ndarray, read_ms: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One frame -> ``(boxes [K, 4] float32 xyxy frame pixels, scores [K], label indices [K])``, unrounded.

        ``read_ms``: how long reading/decoding the frame took (recorded as the ``read`` stage)."""
        return self._detect_one(rgb, read_ms, fmt=False)

    def detect(self, rgb: np.ndarray, read_ms: float | None = None) -> list[dict[str, Any]]:
        """One HxWx3 uint8 RGB frame -> ``[{"box": [x1, y1, x2, y2], "score", "label"}]`` (box in the
        frame's pixels, rounded to 0.01), by decreasing score within each class.

        ``read_ms``: how long reading/decoding the frame took (recorded as the ``read`` stage)."""
        return self._detect_one(rgb, read_ms, fmt=True)

    def detect_batch(self, frames: Sequence[np.ndarray],
                     read_ms: Sequence[float | None] | None = None) -> list[list[dict[str, Any]]]:
        """Several frames in graph-sized batches (the last one padded); one detection list per frame.
        The inference time of a batch is shared equally among its frames in :meth:`timings`."""
        frames = [_as_rgb(f) for f in frames]
        if not frames:
            return []
        reads = list(read_ms) if read_ms is not None else [None] * len(frames)
        step = self.batch or len(frames)
        results: list[list[dict[str, Any]]] = []
        for i in range(0, len(frames), step):
            chunk = frames[i:i + step]
            pre, xs, geos = [], [], []
            for f in chunk:
                t = time.perf_counter()
                x, g = self._prepare(f)
                xs.append(x)
                geos.append(g)
                pre.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            cls, box, q = self._run(np.stack(xs))
            inf = (time.perf_counter() - t) * 1e3 / len(chunk)
            for j, f in enumerate(chunk):
                t = time.perf_counter()
                dets = self._format(*self._postprocess(cls[j], box[j], q[j], geos[j], f.shape[:2]))
                results.append(dets)
                self._timings.add_frame(read=reads[i + j], preprocess=pre[j], inference=inf,
                                        postprocess=(time.perf_counter() - t) * 1e3)
        return results

    def timings(self) -> dict[str, Any]:
        """``{"frames", "stages": {read|preprocess|inference|postprocess: {mean_ms, p50_ms, p95_ms}},
        "end_to_end": {mean_ms, p50_ms, p95_ms}, "fps", "precision", "providers"}``."""
        return {**self._timings.summary(), "precision": self.precision, "providers": self.session.get_providers()}

    def timings_line(self) -> str:
        return self._timings.line()

    def reset_timings(self) -> None:
        self._timings.reset()
