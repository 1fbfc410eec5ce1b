"""Person re-identification embeddings with an edge bundle (numpy + onnxruntime + Pillow only, no torch).

    emb = Embedder("bundles/reid", precision="int8", threads=2)
    vectors = emb.embed([crop1, crop2])          # crops: HxWx3 uint8 RGB person crops -> [N, D] float32
    vectors = emb.embed_boxes(frame, [[x1, y1, x2, y2], ...])   # crops cut from a frame
    print(emb.timings())                         # preprocess / inference per crop, embeddings per second

The bundle (``task: reid``, written by ``export.py`` from a re-id checkpoint) gives the preprocessing
(the crop is resized to the network input, e.g. 256 x 128, exactly as in training), a fixed-batch graph
whose output ``embedding`` is ``[batch, D]``, and an ``embedding`` block ``{dim, normalized, metric}``.
Embeddings are L2-normalized (the graph already normalizes; the runtime re-normalizes so int8 rounding
never leaves a vector off the unit sphere): the cosine similarity of two crops is their dot product.

Crops are batched to the graph's fixed batch (the last batch padded, the padding discarded). An empty
crop (no pixels) is a ValueError naming its index, never a silent skip.
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vision.runtime.bundle import BUNDLE_FILE, Bundle, BundleError, create_session, load_bundle
from vision.runtime.preprocess import normalize, resize_image

OUTPUT = "embedding"
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _stats(values) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean_ms": round(float(a.mean()), 4), "p50_ms": round(float(np.percentile(a, 50)), 4),
            "p95_ms": round(float(np.percentile(a, 95)), 4)}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def as_crop(crop: np.ndarray, index: int = 0) -> np.ndarray:
    """An HxWx3 uint8 RGB crop (grey and RGBA accepted); ValueError naming ``index`` otherwise."""
    c = np.asarray(crop)
    if c.dtype != np.uint8:
        raise ValueError(f"crop {index}: expected a uint8 image, got dtype {c.dtype}")
    if c.ndim == 2:
        c = np.repeat(c[..., None], 3, axis=2)
    elif c.ndim == 3 and c.shape[2] == 4:
        c = c[..., :3]
    if c.ndim != 3 or c.shape[2] != 3:
        raise ValueError(f"crop {index}: expected an HxWx3 RGB image, got shape {c.shape}")
    if c.shape[0] < 1 or c.shape[1] < 1:
        raise ValueError(f"crop {index}: empty crop ({c.shape[1]}x{c.shape[0]} pixels)")
    return np.ascontiguousarray(c)


def crop_boxes(frame: np.ndarray, boxes: np.ndarray, pad: float = 0.0) -> list[np.ndarray]:
    """Crops of xyxy ``boxes`` (frame pixels) from an HxWx3 frame, each box grown by ``pad`` x its size
    and clipped to the frame; a box with no pixels inside the frame is a ValueError naming it."""
    h, w = frame.shape[:2]
    out = []
    for i, b in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        bw, bh = b[2] - b[0], b[3] - b[1]
        x1 = int(np.floor(max(0.0, b[0] - pad * bw)))
        y1 = int(np.floor(max(0.0, b[1] - pad * bh)))
        x2 = int(np.ceil(min(float(w), b[2] + pad * bw)))
        y2 = int(np.ceil(min(float(h), b[3] + pad * bh)))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {i} {[round(float(v), 2) for v in b]}: empty crop (no pixels inside the "
                             f"{w}x{h} frame)")
        out.append(frame[y1:y2, x1:x2])
    return out


class Embedder:
    """Runs a re-id bundle on person crops; see the module docstring."""

    def __init__(self, bundle: Bundle | str | Path, precision: str = "int8", providers: Sequence[str] | None = None,
                 threads: int | None = None, warmup: bool = True) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        doc = self.bundle.doc
        where = self.bundle.root / BUNDLE_FILE
        if self.bundle.task != "reid":
            raise BundleError(f"{where}: a {self.bundle.task!r} bundle, not a re-identification (reid) bundle")
        emb = doc.get("embedding")
        if not isinstance(emb, dict) or "dim" not in emb:
            raise BundleError(f"{where}: no 'embedding' block ({{dim, normalized, metric}}) in a reid bundle")
        metric = emb.get("metric", "cosine")
        if metric != "cosine":
            raise BundleError(f"{where}: embedding metric {metric!r} is not supported (cosine)")
        self.precision = precision
        self.spec = self.bundle.preprocess
        model_path = self.bundle.model_path(precision)
        self.session = create_session(model_path, providers, threads)
        mdoc = doc["models"][precision]
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
        self.batch = int(shape[0]) if isinstance(shape[0], int) else 0  # 0: dynamic
        self.input_dtype = _ORT_DTYPES.get(inp.type, np.float32)
        outputs = {o.name: o for o in self.session.get_outputs()}
        listed = list(mdoc.get("outputs") or [OUTPUT])
        if OUTPUT not in listed or OUTPUT not in outputs:
            raise BundleError(f"{where}: output {OUTPUT!r} missing (bundle lists {listed}, {model_path.name} has "
                              f"{list(outputs)})")
        self.dim = int(emb["dim"])
        odim = outputs[OUTPUT].shape[-1] if outputs[OUTPUT].shape else None
        if isinstance(odim, int) and odim != self.dim:
            raise BundleError(f"{where}: the graph's embedding has {odim} values, the bundle says dim {self.dim}")
        self.normalized = bool(emb.get("normalized", True))
        self.reset_timings()
        if warmup:  # the first run initialises the session: keep it out of the timings
            self._run(np.zeros((max(self.batch, 1), 3, *self.spec.size), self.input_dtype))

    # -- stages --------------------------------------------------------------------------------------
    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        return normalize(resize_image(crop, self.spec)[0], self.spec).astype(self.input_dtype, copy=False)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if not self.batch:
            return self.session.run([OUTPUT], {self.input_name: x})[0]
        out = []
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(self.session.run([OUTPUT], {self.input_name: chunk})[0][:n])
        return np.concatenate(out)

    # -- public API ----------------------------------------------------------------------------------
    def embed_arrays(self, x: np.ndarray) -> np.ndarray:
        """Already preprocessed ``N x 3 x H x W`` float32 inputs -> ``[N, D]`` L2-normalized embeddings."""
        x = np.asarray(x, dtype=self.input_dtype)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self._run(x).reshape(len(x), -1))

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Person crops (HxWx3 uint8 RGB, any size) -> ``[N, D]`` float32 L2-normalized embeddings."""
        crops = [as_crop(c, i) for i, c in enumerate(crops)]
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        t0 = time.perf_counter()
        x = np.stack([self._prepare(c) for c in crops])
        t1 = time.perf_counter()
        out = l2_normalize(self._run(x).reshape(len(crops), -1))
        t2 = time.perf_counter()
        self._pre.append((t1 - t0) * 1e3 / len(crops))
        self._inf.append((t2 - t1) * 1e3 / len(crops))
        self._n += len(crops)
        self._calls += 1
        self._total_s += t2 - t0
        return out

    def embed_boxes(self, frame: np.ndarray, boxes: np.ndarray, pad: float = 0.0) -> np.ndarray:
        """Embeddings of the xyxy ``boxes`` cut from ``frame`` (see :func:`crop_boxes`)."""
        return self.embed(crop_boxes(as_crop(frame), boxes, pad))

    def timings(self) -> dict[str, Any]:
        """``{"embeddings", "calls", "stages": {preprocess, inference: {mean_ms, p50_ms, p95_ms} per crop},
        "embeddings_per_s", "batch", "precision", "providers"}`` (per-crop times are the mean of each call)."""
        out: dict[str, Any] = {"embeddings": self._n, "calls": self._calls, "stages": {}, "batch": self.batch,
                               "precision": self.precision, "providers": self.session.get_providers()}
        if self._pre:
            out["stages"] = {"preprocess": _stats(self._pre), "inference": _stats(self._inf)}
        out["embeddings_per_s"] = round(self._n / self._total_s, 2) if self._total_s > 0 else None
        return out

    def reset_timings(self) -> None:
        self._pre: deque = deque(maxlen=100_000)
        self._inf: deque = deque(maxlen=100_000)
        self._n = self._calls = 0
        self._total_s = 0.0
