"""Static int8 quantization (QDQ, per-channel weights) with ONNX Runtime, calibrated on real inputs."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}


class _Reader(CalibrationDataReader):
    def __init__(self, input_name: str, arrays: Iterable[np.ndarray]) -> None:
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(arrays)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}


_WEIGHTED = ("Conv", "Gemm", "MatMul")


def output_nodes(graph) -> list[str]:
    """The nodes that produce the graph's outputs: walking back from every output through
    non-weighted nodes (reshapes, concatenations, scales) down to and including the weighted layer
    that feeds them. For a classifier: the final Gemm; for a detector: every head output convolution
    and what follows it (one int8 scale over concatenated logits or box distances loses the most)."""
    producer = {o: n for n in graph.node for o in n.output}
    keep: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        n = producer.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        keep.append(n.name)
        if n.op_type not in _WEIGHTED:
            stack += list(n.input)
    return keep


def resolve_nodes(model_path: str | Path, keep_fp32: Sequence[str]) -> list[str]:
    """Node names for ``keep_fp32``: ``first_conv``, ``last_layer``, ``outputs`` (see
    :func:`output_nodes`) or explicit ONNX node names."""
    graph = onnx.load(str(model_path)).graph
    weighted = [n for n in graph.node if n.op_type in _WEIGHTED]
    names = {n.name for n in graph.node}
    out = []
    for item in keep_fp32:
        if item == "first_conv" and weighted:
            out.append(weighted[0].name)
        elif item == "last_layer" and weighted:
            out.append(weighted[-1].name)
        elif item == "outputs":
            out += output_nodes(graph)
        elif item in names:
            out.append(item)
        else:
            raise ValueError(f"calibration.keep_fp32: no node {item!r} in the graph "
                             f"(use first_conv, last_layer, outputs or a node name)")
    return sorted(set(out))


def quantize_int8(fp32: str | Path, out: str | Path, calibration: Iterable[np.ndarray], input_name: str = "input",
                  method: str = "minmax", per_channel: bool = True, keep_fp32: Sequence[str] = (),
                  workdir: str | Path | None = None) -> list[str]:
    """Quantize ``fp32`` into ``out``; ``calibration`` yields input batches shaped like the graph's input.

    ``keep_fp32`` leaves the named layers in float (the input convolution and the classifier are
    the usual accuracy-sensitive ones). Returns the names of the nodes left in float.
    """
    if method not in METHODS:
        raise ValueError(f"calibration.method must be one of {tuple(METHODS)}, got {method!r}")
    fp32, out = Path(fp32), Path(out)
    prepped = Path(workdir or out.parent) / (fp32.stem + ".prep.onnx")
    logging.getLogger("root").setLevel(logging.ERROR)  # silence ORT's "consider pre-processing" notes
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        excluded = resolve_nodes(prepped, keep_fp32)
        quantize_static(str(prepped), str(out), _Reader(input_name, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=METHODS[method], nodes_to_exclude=excluded,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    prepped.unlink(missing_ok=True)
    return excluded
