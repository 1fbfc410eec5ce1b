"""Re-id embedder export: fixed-shape ONNX fp32 + int8 QDQ calibrated on identity-balanced training crops,
an embedding parity gate through the runtime itself, and the embedder bundle.

The gate (:func:`gate`, limits from ``parity`` in ``conf/export.yaml``) compares, on the held-out test
query + gallery images (identities never trained on):

- the cosine similarity of every image's PyTorch embedding with its ONNX embedding, averaged:
  fp32 >= ``min_cosine_fp32`` (0.999), int8 >= ``min_cosine_int8`` (0.98);
- the Market-1501 protocol (:func:`vision.metrics.reid.evaluate`: rank-1, mAP, mINP) on PyTorch embeddings
  and on the ONNX ones: int8 rank-1 and mAP may drop by at most ``max_int8_drop`` (1 point).

ONNX embeddings come from :class:`vision.runtime.reid.Embedder` fed the original crops, so the runtime's own
preprocessing is what is measured. A bundle that fails is never written (``ParityError``).
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vision.errors import ConfigError, DataError, ParityError
from vision.export.onnx_export import to_onnx
from vision.export.quantize import quantize_int8
from vision.metrics import reid as reid_metrics
from vision.runtime.bundle import Bundle
from vision.runtime.preprocess import ImageReadError, read_image
from vision.runtime.reid import OUTPUT, Embedder

log = logging.getLogger(__name__)
OUTPUTS = [OUTPUT]
METRIC_KEYS = ("rank1", "rank5", "rank10", "map", "minp", "num_queries", "num_valid", "num_invalid", "num_gallery")


def raw_crop(ds, i: int) -> np.ndarray:
    """The original HxWx3 uint8 crop of sample ``i`` of a :class:`vision.data.reid.ReidDataset`."""
    s = ds.samples[i]
    try:
        reader = ds.readers.get(s.source)
        img = reader(s) if reader is not None else read_image(s.path)
    except ImageReadError as e:
        raise DataError(str(e)) from e
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise DataError(f"{s.path}: empty crop ({img.shape[1]}x{img.shape[0]} pixels)")
    return img


def eval_labels(ds) -> dict[str, np.ndarray]:
    """Identity (-1 junk), camera index (-1 unknown) and role (0 query, 1 gallery) of every evaluation item."""
    from vision.data.reid import camera_key

    ident = np.asarray([-1 if s.meta.get("junk") else ds.identity_index[s.label] for s in ds.samples])
    cam = np.asarray([ds.camera_index.get(str(camera_key(s)), -1) for s in ds.samples])
    return {"ident": ident, "cam": cam, "role": np.asarray(ds.roles),
            "source": np.asarray([s.source for s in ds.samples], dtype=object)}


def torch_embeddings(model, ds, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """``[N, D]`` PyTorch embeddings (eval mode) of every item of an evaluation dataset, in order."""
    model.eval()
    out = []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for batch in tqdm(loader, desc="parity: PyTorch embeddings", disable=not progress, leave=False):
            emb = model(batch[0])
            if isinstance(emb, tuple):
                raise RuntimeError("the re-id model returned a tuple: it must be in eval mode")
            out.append(emb.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def runtime_embeddings(embedder: Embedder, ds, progress: bool = False, chunk: int = 32) -> np.ndarray:
    """``[N, D]`` embeddings of the original crops through the runtime (its own preprocessing)."""
    out = []
    n = len(ds)
    for i in tqdm(range(0, n, chunk), desc=f"parity: ONNX {embedder.precision} embeddings", disable=not progress,
                  leave=False):
        out.append(embedder.embed([raw_crop(ds, j) for j in range(i, min(n, i + chunk))]))
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32)


def market_protocol(emb: np.ndarray, labels: dict[str, np.ndarray], exclude_same_camera: bool = True,
                    max_rank: int = 50, by_source: bool = True) -> dict[str, Any]:
    """rank-1/5/10, mAP, mINP of queries against the gallery (cosine distance); with ``by_source`` also each
    source's queries against that source's own gallery (``by_source``: the real benchmark is one of them)."""
    q = np.flatnonzero(labels["role"] == 0)
    g = np.flatnonzero(labels["role"] == 1)
    if len(q) == 0 or len(g) == 0:
        raise DataError("the test split has no query or no gallery images")

    def one(qi: np.ndarray, gi: np.ndarray) -> dict[str, Any]:
        d = reid_metrics.distance_matrix(emb[qi], emb[gi], "cosine")
        r = reid_metrics.evaluate(d, labels["ident"][qi], labels["ident"][gi], labels["cam"][qi], labels["cam"][gi],
                                  max_rank, exclude_same_camera)
        return {k: r[k] for k in METRIC_KEYS}

    out = one(q, g)
    if by_source:
        out["by_source"] = {}
        for src in sorted(set(labels["source"][q])):
            qs, gs = q[labels["source"][q] == src], g[labels["source"][g] == src]
            if len(gs):
                out["by_source"][str(src)] = one(qs, gs)
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def evaluate(model, dm, runners: dict[str, Embedder], progress: bool, exclude_same_camera: bool = True,
             max_rank: int = 50) -> dict[str, Any]:
    """PyTorch and each ONNX runner on the held-out test query + gallery: the Market protocol per model and
    the cosine similarity of the ONNX embeddings with PyTorch's (mean, min, 1st percentile)."""
    ds = dm.eval_dataset("test")
    labels = eval_labels(ds)
    ref = torch_embeddings(model, ds, progress=progress)
    report: dict[str, Any] = {"split": "test", "num_images": int(len(ds)),
                              "num_queries": int((labels["role"] == 0).sum()),
                              "num_gallery": int((labels["role"] == 1).sum()),
                              "exclude_same_camera": bool(exclude_same_camera), "distance": "cosine"}
    report["torch"] = market_protocol(ref, labels, exclude_same_camera, max_rank)
    for name, r in runners.items():
        emb = runtime_embeddings(r, ds, progress)
        if emb.shape != ref.shape:
            raise ParityError(f"{name}: embeddings of shape {emb.shape}, PyTorch gives {ref.shape}")
        cos = cosine_rows(emb, ref)
        entry = market_protocol(emb, labels, exclude_same_camera, max_rank)
        entry.update({"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                      "p01_cosine": float(np.percentile(cos, 1)),
                      "rank1_drop": report["torch"]["rank1"] - entry["rank1"],
                      "map_drop": report["torch"]["map"] - entry["map"]})
        report[name] = entry
    return report


def gate(report: dict[str, Any], parity: DictConfig) -> list[str]:
    """Problems that block the bundle: mean cosine with PyTorch below ``min_cosine_fp32`` / ``min_cosine_int8``;
    int8 rank-1 or mAP below PyTorch by more than ``max_int8_drop``."""
    problems = []
    limit = float(parity.get("max_int8_drop", 0.01))
    for prec, default in (("fp32", 0.999), ("int8", 0.98)):
        entry = report.get(f"onnx_{prec}")
        if entry is None:
            continue
        need = float(parity.get(f"min_cosine_{prec}", default))
        if not entry["mean_cosine"] >= need:
            problems.append(f"ONNX {prec} embeddings: mean cosine similarity with PyTorch {entry['mean_cosine']:.5f} "
                            f"(< {need}; min {entry['min_cosine']:.4f})")
    int8 = report.get("onnx_int8")
    if int8 is not None:
        for k, what in (("rank1", "rank-1"), ("map", "mAP")):
            drop = int8[f"{k}_drop"]
            if drop > limit + 1e-12:
                problems.append(f"int8 {what} drops by {drop * 100:.2f} points ({report['torch'][k]:.4f} -> "
                                f"{int8[k]:.4f}; limit {limit * 100:.2f})")
    return problems


def _calibration(cfg: DictConfig, dm, shape: tuple[int, ...], progress: bool):
    """Identity-balanced training crops (no augmentation) as graph-sized batches, and their description."""
    calib = dm.calibration_samples(int(cfg.calibration.num_samples), int(cfg.calibration.seed))
    if not calib:
        raise DataError("int8 calibration: the training split has no images")
    ds = dm.train_dataset(augment=False)
    index = {s.key: i for i, s in enumerate(ds.samples)}

    def arrays() -> Iterator[np.ndarray]:
        buf: list[np.ndarray] = []
        for s in tqdm(calib, desc="calibrating int8", disable=not progress, leave=False):
            buf.append(ds[index[s.key]][0].numpy())
            if len(buf) == shape[0]:
                yield np.stack(buf)
                buf = []
        if buf:  # the fixed-batch graph needs a full batch: repeat this batch's own crops
            yield np.stack([buf[i % len(buf)] for i in range(shape[0])])

    per_id = Counter(s.label for s in calib)
    by_source = Counter(s.source for s in calib)
    info = {"num_images": len(calib), "split": "train", "num_identities": len(per_id),
            "images_per_identity": {"min": min(per_id.values()), "max": max(per_id.values())},
            "by_source": dict(by_source),
            "by_kind": {k: sum(n for src, n in by_source.items() if dm.source_kind(src) == k)
                        for k in ("real", "synthetic", "refined")},
            "method": cfg.calibration.method, "per_channel": bool(cfg.calibration.per_channel)}
    return arrays(), info


def export(cfg: DictConfig, ckpt: dict[str, Any], model, dm, train_cfg: DictConfig, tmp: Path,
           progress: bool) -> tuple[dict[str, Path], dict[str, Any], dict[str, Any], list[str]]:
    """ONNX files, the bundle document, the parity report and the gate's problems."""
    spec = dm.spec
    shape = (int(cfg.batch_size), 3, *spec.size)
    with torch.no_grad():
        dim = int(model.eval()(torch.zeros(1, 3, *spec.size)).shape[1])
    fp32 = to_onnx(model, shape, tmp / "model_fp32.onnx", opset=cfg.opset, output_names=tuple(OUTPUTS))
    files = {"model_fp32.onnx": fp32}
    calib_info = None
    if "int8" in cfg.precisions:
        batches, calib_info = _calibration(cfg, dm, shape, progress)
        try:
            calib_info["fp32_nodes"] = quantize_int8(fp32, tmp / "model_int8.onnx", batches,
                                                     method=cfg.calibration.method,
                                                     per_channel=cfg.calibration.per_channel,
                                                     keep_fp32=list(cfg.calibration.keep_fp32), workdir=tmp)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        files["model_int8.onnx"] = tmp / "model_int8.onnx"
    embedding = {"dim": dim, "normalized": True, "metric": "cosine"}
    models = {p: {"file": f"model_{p}.onnx", "input": {"name": "input", "shape": list(shape), "dtype": "float32"},
                  "outputs": OUTPUTS} for p in ("fp32", "int8") if f"model_{p}.onnx" in files}
    runners = {}
    for prec in ("fp32", "int8"):
        if prec in cfg.precisions:
            staged = {"task": "reid", "labels": [], "preprocess": spec.to_dict(), "models": {prec: models[prec]},
                      "embedding": embedding}
            runners[f"onnx_{prec}"] = Embedder(Bundle(tmp, staged), prec, list(cfg.providers))
    t = train_cfg.task
    report = evaluate(model, dm, runners, progress, bool(t.get("exclude_same_camera", True)),
                      int(t.get("max_rank", 50)))
    problems = gate(report, cfg.parity)
    doc = {
        "task": "reid",
        "labels": [],  # identity-free: the embedder knows no identity, the runtime gives temporary ones
        "preprocess": spec.to_dict(),
        "models": {p: models[p] for p in cfg.precisions},
        "embedding": embedding,
        "metrics": {f"test_{k}": {n: v[k] for n, v in report.items() if isinstance(v, dict) and k in v}
                    for k in ("rank1", "map", "minp")},
        "calibration": calib_info,
        "training_identities": len(ckpt["vision"]["labels"]),
    }
    return files, doc, report, problems


def run(cfg: DictConfig, ckpt: dict[str, Any], ckpt_path: Path, model, dm, train_cfg: DictConfig, out_dir: Path,
        progress: bool, on_staged: Callable[[Bundle, dict[str, Any]], None] | None = None) -> Path:
    """Export, gate, write the bundle atomically (nothing when the gate fails) and verify it.

    ``on_staged(bundle, report)``, when given, is called with the staged (unverified, temporary) bundle and
    the parity report before the gate decides (benchmarks time the runtime on it, pass or fail)."""
    from vision.export.pipeline import finish

    with tempfile.TemporaryDirectory(prefix="vision-export-") as tmp_s:
        tmp = Path(tmp_s)
        files, doc, report, problems = export(cfg, ckpt, model, dm, train_cfg, tmp, progress)
        report["passed"] = not problems
        report["limits"] = OmegaConf.to_container(cfg.parity)
        if on_staged is not None:
            on_staged(Bundle(tmp, doc), report)
        if problems:
            raise ParityError("parity gate failed, no bundle written:\n  " + "\n  ".join(problems)
                              + f"\nreport: {json.dumps(report, indent=1)}")
        if "fp32" not in cfg.precisions:
            files.pop("model_fp32.onnx")
        doc["parity"] = report
        return finish(cfg, ckpt, ckpt_path, train_cfg, tmp, files, doc, out_dir)
