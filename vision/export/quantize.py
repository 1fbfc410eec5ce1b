"""Static int8 quantization (QDQ, per-channel weights) with ONNX Runtime, calibrated on real inputs."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
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


def quantize_int8(fp32: str | Path, out: str | Path, calibration: Iterable[np.ndarray], input_name: str = "input",
                  method: str = "minmax", per_channel: bool = True, workdir: str | Path | None = None) -> Path:
    """``calibration`` yields input batches shaped like the graph's input."""
    if method not in METHODS:
        raise ValueError(f"calibration.method must be one of {tuple(METHODS)}, got {method!r}")
    fp32, out = Path(fp32), Path(out)
    prepped = Path(workdir or out.parent) / (fp32.stem + ".prep.onnx")
    logging.getLogger("root").setLevel(logging.ERROR)  # silence ORT's "consider pre-processing" notes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(out), _Reader(input_name, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=METHODS[method],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    prepped.unlink(missing_ok=True)
    return out
