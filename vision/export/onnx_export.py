"""PyTorch -> ONNX with a fixed input shape (what edge compilers want)."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, opset: int = 17,
            input_name: str = "input", output_names: tuple[str, ...] = ("logits",)) -> Path:
    path = Path(path)
    model = model.eval().cpu()
    dummy = torch.zeros(*input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=list(output_names), do_constant_folding=True)
    onnx.checker.check_model(str(path))
    return path
