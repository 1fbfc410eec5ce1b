"""Classification with an edge bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from vision.runtime.bundle import Bundle, BundleError, create_session, load_bundle
from vision.runtime.preprocess import preprocess, read_image


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Classifier:
    """Runs a classification bundle: fixed-batch ONNX graph, inputs padded to the graph's batch."""

    def __init__(self, bundle: Bundle | str | Path, precision: str = "int8",
                 providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if self.bundle.task != "classification":
            raise BundleError(f"{self.bundle.root}: a {self.bundle.task!r} bundle, not a classification bundle")
        self.precision = precision
        self.session = create_session(self.bundle.model_path(precision), providers, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = int(inp.shape[0]) if isinstance(inp.shape[0], int) else 0  # 0: dynamic
        self.spec = self.bundle.preprocess
        self.labels = self.bundle.labels

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x: N x 3 x H x W float32 (already preprocessed) -> N x C logits."""
        if not self.batch:
            return self.session.run(None, {self.input_name: x})[0]
        out = []
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return np.concatenate(out)

    def classify_array(self, rgb: np.ndarray, top_k: int = 3) -> dict[str, Any]:
        probs = softmax(self.logits(preprocess(rgb, self.spec)[None])[0])
        order = np.argsort(-probs)[:top_k]
        return {"label": self.labels[order[0]], "score": float(probs[order[0]]),
                "top_k": [{"label": self.labels[i], "score": float(probs[i])} for i in order]}

    def classify_files(self, paths: Iterable[str | Path], top_k: int = 3) -> Iterable[dict[str, Any]]:
        for p in paths:
            try:
                rec = self.classify_array(read_image(p), top_k)
                yield {"file": str(p), **rec}
            except ValueError as e:  # unreadable image: reported in the results, never skipped
                yield {"file": str(p), "error": str(e)}
