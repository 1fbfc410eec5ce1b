"""The export job behind ``export.py``: checkpoint -> ONNX fp32/int8 -> parity gate -> bundle."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vision.checkpointing import load_checkpoint
from vision.config import validate
from vision.config.schema import ExportSchema
from vision.errors import CheckpointError, ConfigError, ParityError
from vision.export.bundle_writer import write_bundle
from vision.export.onnx_export import to_onnx
from vision.export.quantize import quantize_int8
from vision.metrics import classification as cls_metrics
from vision.runtime.bundle import load_bundle
from vision.runtime.classify import Classifier

log = logging.getLogger(__name__)
SUPPORTED = ("classification", "detection", "reid")


def resolve_checkpoint(spec: str) -> Path:
    p = Path(spec)
    if p.is_dir():
        run = p / "run.json"
        if not run.is_file():
            raise CheckpointError(f"{p}: a folder without run.json; give the .ckpt file instead")
        best = json.loads(run.read_text()).get("best_checkpoint")
        if not best:
            raise CheckpointError(f"{run}: the run recorded no best checkpoint")
        p = Path(best)
    return p


def _check_consistent(ckpt: dict[str, Any], ckpt_path: Path) -> None:
    """The task named in the metadata must be the one whose class trained the checkpoint."""
    from hydra.utils import get_class

    meta = ckpt["vision"]
    target = ((meta.get("config") or {}).get("task") or {}).get("_target_")
    if not target:
        raise CheckpointError(f"{ckpt_path}: the checkpoint carries no training config")
    try:
        trained_by = get_class(target).task_name
    except Exception as e:  # noqa: BLE001 - an unknown class is reported as such
        raise CheckpointError(f"{ckpt_path}: the task class {target} it was trained with is unknown here ({e})") from e
    if trained_by != meta["task"]:
        raise CheckpointError(f"{ckpt_path}: inconsistent checkpoint: its metadata says task {meta['task']!r} but it "
                              f"was trained by {target} ({trained_by!r})")


def rebuild(ckpt: dict[str, Any], data_overrides: dict[str, Any] | None = None):
    """Model (weights loaded, eval mode) and datamodule (the run's own split) from a checkpoint."""
    meta = ckpt["vision"]
    cfg = OmegaConf.create(meta["config"])
    labels = meta["labels"]
    model_cfg = OmegaConf.merge(cfg.model, {"pretrained": None})
    model = instantiate(model_cfg, num_classes=len(labels))
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    model.eval()
    data_cfg = OmegaConf.merge(cfg.data, data_overrides or {})
    dm = instantiate(data_cfg)
    if "datamodule" in meta:
        dm.load_state_dict(meta["datamodule"])
    dm.setup("test")
    if dm.labels != labels:
        raise CheckpointError(f"the data has labels {dm.labels}, the checkpoint {labels}")
    return model, dm, cfg


def _batches(dm, split: str, batch_size: int):
    loader = torch.utils.data.DataLoader(dm.dataset(split), batch_size=batch_size, shuffle=False)
    for x, y, _ in loader:
        yield x.numpy(), y.numpy()


def evaluate_classification(model, dm, runners: dict[str, Classifier], progress: bool) -> dict[str, Any]:
    """Top-1 of PyTorch and each ONNX model on the held-out test split, plus logit agreement."""
    ys, preds, logits = [], {"torch": []}, {"torch": []}
    for name in runners:
        preds[name], logits[name] = [], []
    n = len(dm.splits["test"])
    with torch.no_grad(), tqdm(total=n, desc="parity: evaluating test split", disable=not progress) as bar:
        for x, y in _batches(dm, "test", 32):
            ys.append(y)
            lt = model(torch.from_numpy(x)).numpy()
            logits["torch"].append(lt)
            for name, r in runners.items():
                logits[name].append(r.logits(x))
            bar.update(len(y))
    y_all = np.concatenate(ys)
    out: dict[str, Any] = {"num_images": int(len(y_all)), "split": "test"}
    ref = np.concatenate(logits["torch"])
    for name, ls in logits.items():
        lg = np.concatenate(ls)
        cm = cls_metrics.confusion_matrix(y_all, lg.argmax(1), len(dm.labels))
        entry: dict[str, Any] = {"top1": cls_metrics.top1(cm), "macro_f1": cls_metrics.report(cm, dm.labels)["macro_f1"]}
        if name == "torch":
            entry["max_abs_logit"] = float(np.abs(lg).max())
        else:
            entry["max_abs_logit_diff"] = float(np.abs(lg - ref).max())
            entry["agreement_with_torch"] = float((lg.argmax(1) == ref.argmax(1)).mean())
        out[name] = entry
    return out


def gate(report: dict[str, Any], parity: DictConfig) -> list[str]:
    """Problems that block the bundle: fp32 logits beyond atol + rtol * max|logit|, int8 top-1 drop."""
    problems = []
    fp32 = report.get("onnx_fp32")
    if fp32 is not None:
        tol = parity.fp32_atol + parity.fp32_rtol * report["torch"]["max_abs_logit"]
        if fp32["max_abs_logit_diff"] > tol:
            problems.append(f"ONNX fp32 logits differ from PyTorch by {fp32['max_abs_logit_diff']:.2e} (> {tol:.2e})")
    int8 = report.get("onnx_int8")
    if int8 is not None:
        drop = report["torch"]["top1"] - int8["top1"]
        int8["top1_drop"] = drop
        if drop > parity.max_int8_drop + 1e-12:
            problems.append(f"int8 top-1 drops by {drop * 100:.2f} points (limit {parity.max_int8_drop * 100:.2f})")
    return problems


def run(cfg: DictConfig) -> Path:
    validate(cfg, ExportSchema)
    out_dir = Path(cfg.output_dir)
    if out_dir.exists():
        raise ConfigError(f"output_dir {out_dir} already exists; bundles are never overwritten (set name=...)")
    bad = set(cfg.precisions) - {"fp32", "int8"}
    if bad or not cfg.precisions:
        raise ConfigError(f"precisions must be a non-empty subset of [fp32, int8], got {list(cfg.precisions)}")
    ckpt_path = resolve_checkpoint(cfg.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    task = ckpt["vision"]["task"]
    if task not in SUPPORTED:
        raise CheckpointError(f"{ckpt_path}: export of {task!r} checkpoints is not supported yet ({SUPPORTED})")
    _check_consistent(ckpt, ckpt_path)
    model, dm, train_cfg = rebuild(ckpt, OmegaConf.to_container(cfg.data) if cfg.get("data") else None)
    spec = dm.spec
    shape = (int(cfg.batch_size), 3, *spec.size)
    progress = bool(cfg.progress)
    if task == "detection":
        if getattr(model, "native_loss", False):
            raise CheckpointError(f"{ckpt_path}: {model.config.arch} is a torchvision reference baseline; edge bundles "
                                  f"are made from the edge detector (model=detector)")
        return _run_detection(cfg, ckpt, ckpt_path, model, dm, train_cfg, out_dir, progress)
    if task == "reid":
        from vision.export.reid import run as _run_reid

        return _run_reid(cfg, ckpt, ckpt_path, model, dm, train_cfg, out_dir, progress)

    with tempfile.TemporaryDirectory(prefix="vision-export-") as tmp_s:
        tmp = Path(tmp_s)
        steps = tqdm(total=1 + ("int8" in cfg.precisions) + 1, desc="export", disable=not progress)
        fp32 = to_onnx(model, shape, tmp / "model_fp32.onnx", opset=cfg.opset)
        steps.update()
        files = {"model_fp32.onnx": fp32}
        calib_info = None
        if "int8" in cfg.precisions:
            calib = dm.calibration_samples(int(cfg.calibration.num_samples), int(cfg.calibration.seed))
            ds = dm.dataset("train")
            index = {s.key: i for i, s in enumerate(ds.samples)}

            def arrays():
                buf = []
                for s in tqdm(calib, desc="calibrating int8", disable=not progress, leave=False):
                    buf.append(ds[index[s.key]][0].numpy())
                    if len(buf) == shape[0]:
                        yield np.stack(buf)
                        buf = []

            try:
                fp32_nodes = quantize_int8(fp32, tmp / "model_int8.onnx", arrays(), method=cfg.calibration.method,
                                           per_channel=cfg.calibration.per_channel,
                                           keep_fp32=list(cfg.calibration.keep_fp32), workdir=tmp)
            except ValueError as e:
                raise ConfigError(str(e)) from e
            files["model_int8.onnx"] = tmp / "model_int8.onnx"
            calib_info = {"num_images": len(calib), "split": "train", "method": cfg.calibration.method,
                          "per_channel": bool(cfg.calibration.per_channel), "fp32_nodes": fp32_nodes,
                          "by_class": {lab: sum(s.label == lab for s in calib) for lab in dm.labels}}
            steps.update()
        # Evaluate through the runtime itself, from an unverified staging bundle of the same files.
        runners = {}
        for prec in ("fp32", "int8"):
            if prec in cfg.precisions:
                runners[f"onnx_{prec}"] = _staged_classifier(tmp, files[f"model_{prec}.onnx"], dm, prec, list(cfg.providers))
        report = evaluate_classification(model, dm, runners, progress)
        problems = gate(report, cfg.parity)
        report["passed"] = not problems
        report["limits"] = OmegaConf.to_container(cfg.parity)
        steps.update()
        steps.close()
        if problems:
            raise ParityError("parity gate failed, no bundle written:\n  " + "\n  ".join(problems)
                              + f"\nreport: {json.dumps(report, indent=1)}")
        if "fp32" not in cfg.precisions:
            files.pop("model_fp32.onnx")
        meta = ckpt["vision"]
        doc = {
            "task": task,
            "labels": meta["labels"],
            "preprocess": spec.to_dict(),
            "models": {p: {"file": f"model_{p}.onnx", "input": {"name": "input", "shape": list(shape),
                                                                  "dtype": "float32"},
                           "outputs": ["logits"], "postprocess": "softmax"} for p in cfg.precisions},
            "metrics": {"test_top1": {k: v["top1"] for k, v in report.items() if isinstance(v, dict) and "top1" in v}},
            "parity": report,
            "calibration": calib_info,
        }
        return finish(cfg, ckpt, ckpt_path, train_cfg, tmp, files, doc, out_dir)


def _provenance(cfg: DictConfig, ckpt: dict[str, Any], ckpt_path: Path, train_cfg: DictConfig) -> dict[str, Any]:
    meta = ckpt["vision"]
    return {"checkpoint": str(ckpt_path), "mlflow": meta.get("mlflow"), "data_sources": meta.get("data_cards"),
            "model": OmegaConf.to_container(train_cfg.model), "opset": int(cfg.opset),
            "experiment_name": train_cfg.get("experiment_name"), "dataset_snapshot": dataset_snapshot(train_cfg)}


def dataset_snapshot(train_cfg: DictConfig) -> str | None:
    """The curated dataset snapshot the run trained on: ``data.snapshot`` (an id, or a mapping with ``id`` /
    ``snapshot_id``), else the ``snapshot_id`` of the ``manifest.json`` of a snapshot a source reads from."""
    data = OmegaConf.to_container(train_cfg.data, resolve=False) if train_cfg.get("data") is not None else {}
    snap = data.get("snapshot") if isinstance(data, dict) else None
    if isinstance(snap, dict):
        snap = snap.get("id") or snap.get("snapshot_id") or snap.get("name")
    if snap:  # a snapshot name: its manifest under data.snapshots_root holds the id
        root = data.get("snapshots_root")
        folder = Path(str(root)) / str(snap) if root and "${" not in str(root) else Path(str(snap))
        manifest = folder / "manifest.json"
        if manifest.is_file():
            try:
                return str(json.loads(manifest.read_text()).get("snapshot_id") or snap)
            except (OSError, json.JSONDecodeError):
                pass
        return str(snap)
    ids: list[str] = []
    for src in (data.get("sources") or {}).values() if isinstance(data, dict) else []:
        if not isinstance(src, dict):
            continue
        for key in ("root", "annotations", "path", "manifest"):
            v = src.get(key)
            if not isinstance(v, str) or "${" in v:
                continue
            p = Path(v)
            for folder in [p, *list(p.parents)[:3]]:
                m = folder / "manifest.json" if folder.name != "manifest.json" else folder
                if m.is_file():
                    try:
                        sid = json.loads(m.read_text()).get("snapshot_id")
                    except (OSError, ValueError, AttributeError):
                        sid = None
                    if sid and sid not in ids:
                        ids.append(str(sid))
                    break
    return ",".join(ids) or None


def _run_summary(ckpt_path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The training run's test report (``run.json`` beside the checkpoint folder) and a note on its checkpoint."""
    run_json = ckpt_path.resolve().parent.parent / "run.json"
    try:
        run = json.loads(run_json.read_text())
    except (OSError, ValueError):
        return None, None
    test = run.get("test") or None
    note = None
    best = run.get("best_checkpoint")
    if test and best and Path(best).resolve() != ckpt_path.resolve():
        note = (f"The slices below were measured by the training run on its best checkpoint ({Path(best).name}), "
                f"not on the exported {ckpt_path.name}.")
    return test, note


def finish(cfg: DictConfig, ckpt: dict[str, Any], ckpt_path: Path, train_cfg: DictConfig, tmp: Path,
           files: dict[str, Path], doc: dict[str, Any], out_dir: Path) -> Path:
    """After the gate passed: provenance, the model card, parity report and calibration summary as files of the
    bundle, the bundle written atomically and verified, attached to the training run and registered."""
    from vision.export.model_card import render
    from vision.export.registry import register_exported

    doc["provenance"] = _provenance(cfg, ckpt, ckpt_path, train_cfg)
    report = doc["parity"]
    extra = {"parity_report.json": tmp / "parity_report.json"}
    extra["parity_report.json"].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if doc.get("calibration"):
        extra["calibration.json"] = tmp / "calibration.json"
        extra["calibration.json"].write_text(json.dumps(doc["calibration"], indent=2, sort_keys=True) + "\n")
    card_cfg = cfg.get("model_card") or {}
    run_test, note = _run_summary(ckpt_path)
    extra["MODEL_CARD.md"] = tmp / "MODEL_CARD.md"
    extra["MODEL_CARD.md"].write_text(render(doc, ckpt["vision"], name=out_dir.name, run_test=run_test, run_note=note,
                                             intended=card_cfg.get("intended_use"),
                                             extra_limits=list(card_cfg.get("limits") or [])))
    write_bundle(out_dir, {**files, **extra}, doc)
    written = load_bundle(out_dir)  # the written bundle verifies
    registration = register_exported(cfg, out_dir, written.doc)
    _log_to_mlflow(cfg, ckpt["vision"].get("mlflow"), out_dir, report, registration)
    log.info("bundle written to %s%s", out_dir,
             f"; registered as {registration['model']} version {registration['version']}" if registration else "")
    return out_dir


def _run_detection(cfg: DictConfig, ckpt: dict[str, Any], ckpt_path: Path, model, dm, train_cfg: DictConfig,
                   out_dir: Path, progress: bool) -> Path:
    from vision.export import detection as det_export

    with tempfile.TemporaryDirectory(prefix="vision-export-") as tmp_s:
        tmp = Path(tmp_s)
        files, doc, report, problems = det_export.export(cfg, ckpt, model, dm, train_cfg, tmp, progress)
        report["passed"] = not problems
        report["limits"] = OmegaConf.to_container(cfg.parity)
        if problems:
            raise ParityError("parity gate failed, no bundle written:\n  " + "\n  ".join(problems)
                              + f"\nreport: {json.dumps(report, indent=1)}")
        if "fp32" not in cfg.precisions:
            files.pop("model_fp32.onnx")
        doc["parity"] = report
        return finish(cfg, ckpt, ckpt_path, train_cfg, tmp, files, doc, out_dir)


def _staged_classifier(tmp: Path, model_file: Path, dm, precision: str, providers: list[str]) -> Classifier:
    from vision.runtime.bundle import Bundle

    doc = {"task": "classification", "labels": dm.labels, "preprocess": dm.spec.to_dict(),
           "models": {precision: {"file": model_file.name}}}
    return Classifier(Bundle(tmp, doc), precision, providers)


def _log_to_mlflow(cfg: DictConfig, mlflow_meta: dict | None, out_dir: Path, report: dict,
                   registration: dict | None = None) -> None:
    """Attach the export to the training run: the parity report, the export metrics and either the bundle itself
    or, when it was registered (its files live in the nested export run), the model version it became."""
    if not (cfg.logger and cfg.logger.get("log_to_run") and mlflow_meta and mlflow_meta.get("run_id")):
        return
    try:
        import mlflow

        client = mlflow.MlflowClient(mlflow_meta.get("tracking_uri"))
        rid = mlflow_meta["run_id"]
        client.log_dict(rid, report, f"export/{out_dir.name}/parity.json")
        if registration:
            client.set_tag(rid, f"export.{out_dir.name}",
                           f"models:/{registration['model']}/{registration['version']}")
        else:
            client.log_artifacts(rid, str(out_dir), f"export/{out_dir.name}/bundle")
        for k in ("onnx_fp32", "onnx_int8"):
            for m in ("top1", "ap50", "ap", "rank1", "map"):
                if k in report and m in report[k]:
                    client.log_metric(rid, f"export/{k}_{m}", report[k][m])
    except Exception as e:  # noqa: BLE001 - the bundle is written; tracking is best effort here
        log.warning("could not attach the bundle to MLflow run %s: %s", mlflow_meta.get("run_id"), e)
