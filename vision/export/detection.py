"""Detector export: fixed-shape ONNX fp32 + int8 QDQ calibrated on real and synthetic validation images,
a parity gate on COCO AP (PyTorch vs ONNX through the runtime itself), and the detection bundle."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vision.errors import ConfigError
from vision.export.onnx_export import to_onnx
from vision.export.quantize import quantize_int8
from vision.metrics import detection as det_metrics
from vision.models.detector import config_dict
from vision.runtime.bundle import Bundle
from vision.runtime.detect import ObjectDetector
from vision.tasks.detection import to_original

log = logging.getLogger(__name__)
OUTPUTS = ["cls_logits", "box_ltrb", "quality"]


def decode_block(model, decode: dict[str, Any]) -> dict[str, Any]:
    c = model.config
    return {"input_size": list(c.input_size), "strides": list(c.strides), **decode}


def eval_decode(cfg: DictConfig, train_cfg: DictConfig) -> dict[str, Any]:
    """Decoding for the parity evaluation: the task's evaluation settings (low threshold, as COCO AP
    integrates over all scores)."""
    t = train_cfg.task
    return {"score_threshold": float(t.get("score_threshold", 0.05)), "nms_iou": float(t.get("nms_iou", 0.6)),
            "max_detections": int(t.get("max_detections", 100)), "class_agnostic": False,
            "pre_nms_topk": int(cfg.decode.get("pre_nms_topk", 1000))}


def evaluate(model, dm, runners: dict[str, ObjectDetector], decode: dict[str, Any], progress: bool,
             slice_by: list[str]) -> dict[str, Any]:
    """COCO AP of PyTorch and of each ONNX runner (fed the original images, so the runtime's own
    letterbox and decoding are what is measured) on the held-out test split."""
    from vision.tasks.detection import _decode

    samples = dm.splits["test"]
    ds = dm.dataset("test")
    preds: dict[str, list] = {"torch": [], **{k: [] for k in runners}}
    with torch.no_grad():
        for i in tqdm(range(len(samples)), desc="parity: evaluating test split", disable=not progress):
            s = samples[i]
            x, t, _ = ds[i]
            out = [o.numpy() for o in model(x[None])]
            boxes, scores, labels = _decode(model, *out, decode)[0]
            preds["torch"].append((to_original(boxes, t["scale"], t["pad"], s.width, s.height), scores, labels))
            if runners:
                rgb = ds.read(s)
                for name, r in runners.items():
                    preds[name].append(r.detect_arrays(rgb))
    kinds = {name: dm.source_kind(name) for name in dm.sources}
    report: dict[str, Any] = {"num_images": len(samples), "split": "test"}
    for name, p in preds.items():
        rep = det_metrics.evaluate_detections(samples, p, dm.labels, slice_by=slice_by, kinds=kinds,
                                              max_detections=decode["max_detections"])
        report[name] = {k: rep[k] for k in ("ap", "ap50", "ap75", "size", "per_class", "slices") if k in rep}
    return report


def gate(report: dict[str, Any], parity: DictConfig) -> list[str]:
    """Problems that block the bundle: ONNX fp32 AP50/AP off PyTorch by more than ``max_fp32_ap_diff``;
    int8 AP50 below PyTorch by more than ``max_int8_drop``."""
    problems = []
    ref = report["torch"]
    fp32 = report.get("onnx_fp32")
    limit = float(parity.get("max_fp32_ap_diff", 0.002))
    if fp32 is not None:
        for k in ("ap50", "ap"):
            d = abs(fp32[k] - ref[k])
            fp32[f"{k}_diff"] = d
            if d > limit + 1e-12:
                problems.append(f"ONNX fp32 {k} {fp32[k]:.4f} differs from PyTorch {ref[k]:.4f} by {d:.4f} (> {limit})")
    int8 = report.get("onnx_int8")
    if int8 is not None:
        drop = ref["ap50"] - int8["ap50"]
        int8["ap50_drop"] = drop
        int8["ap_drop"] = ref["ap"] - int8["ap"]
        if drop > float(parity.max_int8_drop) + 1e-12:
            problems.append(f"int8 AP50 drops by {drop * 100:.2f} points (limit {float(parity.max_int8_drop) * 100:.2f})")
    return problems


def export(cfg: DictConfig, ckpt: dict[str, Any], model, dm, train_cfg: DictConfig, tmp: Path,
           progress: bool) -> tuple[dict[str, Path], dict[str, Any], dict[str, Any], list[str]]:
    """ONNX files, the bundle document, the parity report and the gate's problems."""
    spec = dm.spec
    shape = (int(cfg.batch_size), 3, *spec.size)
    fp32 = to_onnx(model, shape, tmp / "model_fp32.onnx", opset=cfg.opset, output_names=tuple(OUTPUTS))
    files = {"model_fp32.onnx": fp32}
    calib_info = None
    if "int8" in cfg.precisions:
        calib = dm.calibration_samples(int(cfg.calibration.num_samples), int(cfg.calibration.seed))
        split = "val" if dm.splits["val"] else "train"
        ds = dm.dataset(split)
        index = {s.key: i for i, s in enumerate(ds.samples)}

        def arrays():
            buf = []
            for s in tqdm(calib, desc="calibrating int8", disable=not progress, leave=False):
                buf.append(ds[index[s.key]][0].numpy())
                if len(buf) == shape[0]:
                    yield np.stack(buf)
                    buf = []
            if buf:  # a last partial batch: padded by repeating its images, never dropped
                yield np.stack([buf[i % len(buf)] for i in range(shape[0])])

        try:
            fp32_nodes = quantize_int8(fp32, tmp / "model_int8.onnx", arrays(), method=cfg.calibration.method,
                                       per_channel=cfg.calibration.per_channel,
                                       keep_fp32=list(cfg.calibration.keep_fp32), workdir=tmp)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        files["model_int8.onnx"] = tmp / "model_int8.onnx"
        by_source: dict[str, int] = {}
        for s in calib:
            by_source[s.source] = by_source.get(s.source, 0) + 1
        calib_info = {"num_images": len(calib), "split": split, "method": cfg.calibration.method,
                      "per_channel": bool(cfg.calibration.per_channel), "fp32_nodes": fp32_nodes,
                      "by_source": by_source,
                      "by_kind": {k: sum(n for src, n in by_source.items() if dm.source_kind(src) == k)
                                  for k in ("real", "synthetic", "refined")}}
    ev = eval_decode(cfg, train_cfg)
    runners = {}
    for prec in ("fp32", "int8"):
        if prec in cfg.precisions:
            staged = {"task": "detection", "labels": dm.labels, "preprocess": spec.to_dict(),
                      "models": {prec: {"file": files[f"model_{prec}.onnx"].name, "outputs": OUTPUTS,
                                        "input": {"name": "input", "shape": list(shape), "dtype": "float32"}}},
                      "decode": decode_block(model, ev)}
            runners[f"onnx_{prec}"] = ObjectDetector(Bundle(tmp, staged), prec, list(cfg.providers))
    slice_by = list(train_cfg.task.get("slice_by") or ["source", "kind"])
    report = evaluate(model, dm, runners, ev, progress, slice_by)
    problems = gate(report, cfg.parity)
    deploy = {k: v for k, v in OmegaConf.to_container(cfg.decode).items()}
    meta = ckpt["vision"]
    doc = {
        "task": "detection",
        "labels": meta["labels"],
        "preprocess": spec.to_dict(),
        "models": {p: {"file": f"model_{p}.onnx", "input": {"name": "input", "shape": list(shape), "dtype": "float32"},
                       "outputs": OUTPUTS} for p in cfg.precisions},
        "decode": decode_block(model, deploy),
        "metrics": {"test_ap50": {k: v["ap50"] for k, v in report.items() if isinstance(v, dict) and "ap50" in v},
                    "test_ap": {k: v["ap"] for k, v in report.items() if isinstance(v, dict) and "ap" in v}},
        "calibration": calib_info,
        "model_config": config_dict(model),
    }
    return files, doc, report, problems
