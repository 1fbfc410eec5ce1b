"""Run a trained model over a dataset / view, store its predictions, evaluate them and score the labels.

:func:`predict` runs an **edge bundle** (the torch-free runtime: a folder with ``bundle.json`` or
``models:/NAME@ALIAS``) or a **checkpoint** (a ``.ckpt`` or a training run folder with ``run.json``) over
every sample of a collection and stores the output in ``field``:

* detection: ``fo.Detections`` (relative boxes, ``label``, ``confidence``), boxes in the image's pixels;
* classification: ``fo.Classification`` with ``confidence`` and ``logits``;
* re-id (bundles with ``task: reid``): the crops' embeddings; every ``role == query`` sample gets its
  ranked gallery list (see :func:`rank_queries`).

A sample whose image is missing or unreadable keeps ``field = None``, gets the reason in
``<field>_error`` and is listed in the run's ``problems`` (never skipped silently). The run is recorded
in ``dataset.info["predictions"][field]`` (model, its sha256 / bundle integrity, task, labels, counts).

:func:`evaluate` compares ``field`` with the ground truth using FiftyOne's evaluation under ``eval_key``:

* detections: ``evaluate_detections`` (COCO-style matching, ``iou``), so every predicted and every
  ground-truth object carries ``<eval_key>`` = ``tp`` / ``fp`` / ``fn`` (+ ``_id``, ``_iou``), samples
  carry ``<eval_key>_tp`` / ``_fp`` / ``_fn`` and ``<eval_key>_errors`` (= fp + fn: sort by it in the App),
  and the summary has mAP, AP per class, precision / recall per class;
* classification: ``evaluate_classifications`` (``<eval_key>`` True / False per sample), accuracy and
  per-class precision / recall.

Then ``fiftyone.brain`` scores the labels (both run offline, no model download):
``compute_mistakenness`` (``<eval_key>_mistakenness`` per sample and per ground-truth object,
``<eval_key>_missing`` / ``_spurious`` for detections) and, for classifications with logits,
``compute_hardness`` (``<eval_key>_hardness``). FiftyOne's hardness needs logits, which detectors do not
give per image, so for detections ``<eval_key>_hardness`` is computed here: the mean binary entropy (bits)
of the predicted boxes' confidences (an uncertain model on this image = a hard image), recorded in
``dataset.info["brain"]``. Attributes that these steps write onto ground-truth objects are registered in
``dataset.info["derived_label_attrs"]`` so that snapshot exports leave them out.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vision.curation.load import CLS_FIELD, DET_FIELD, _fo
from vision.errors import ConfigError, DataError

__all__ = ["load_runner", "predict", "evaluate", "rank_queries", "detection_hardness", "register_derived_attrs"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _check_field(name: str, what: str) -> None:
    if not name or not name.isidentifier() or name.startswith("_"):
        raise ConfigError(f"{what} must be a Python identifier not starting with '_', got {name!r}")


# -- runners ------------------------------------------------------------------------------------------
class _Runner:
    task: str
    labels: list[str]
    info: dict[str, Any]

    def run(self, rgb: np.ndarray) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class _BundleDetector(_Runner):
    task = "detection"

    def __init__(self, bundle, precision: str, threads: int | None, score_threshold: float | None) -> None:
        from vision.runtime.detect import ObjectDetector

        self.model = ObjectDetector(bundle, precision=precision, threads=threads, score_threshold=score_threshold)
        self.labels = list(self.model.labels)

    def run(self, rgb):
        boxes, scores, labels = self.model.detect_arrays(rgb)
        return [(b, float(s), self.labels[int(k)]) for b, s, k in zip(boxes, scores, labels)]


class _BundleClassifier(_Runner):
    task = "classification"

    def __init__(self, bundle, precision: str, threads: int | None) -> None:
        from vision.runtime.classify import Classifier

        self.model = Classifier(bundle, precision=precision, threads=threads)
        self.labels = list(self.model.labels)

    def run(self, rgb):
        from vision.runtime.preprocess import preprocess

        return self.model.logits(preprocess(rgb, self.model.spec)[None])[0]


class _BundleEmbedder(_Runner):
    task = "reid"

    def __init__(self, bundle, precision: str, threads: int | None) -> None:
        from vision.runtime.reid import Embedder

        self.model = Embedder(bundle, precision=precision, threads=threads)
        self.labels = []

    def run(self, rgb):
        return self.model.embed([rgb])[0]


class _CheckpointModel(_Runner):
    """A toolkit checkpoint run with torch: the run's own preprocessing and (detectors) decoding."""

    def __init__(self, path: Path, score_threshold: float | None, threads: int | None) -> None:
        import torch
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from vision.checkpointing import load_checkpoint
        from vision.runtime.preprocess import PreprocessSpec

        ckpt = load_checkpoint(path)
        meta = ckpt["vision"]
        self.task = str(meta.get("task"))
        if self.task not in ("detection", "classification"):
            raise ConfigError(f"{path}: a {self.task!r} checkpoint; predict runs detection and classification "
                              f"checkpoints (export a re-id model to a bundle to rank queries)")
        self.labels = list(meta["labels"])
        cfg = OmegaConf.create(meta["config"])
        model = instantiate(OmegaConf.merge(cfg.model, {"pretrained": None}), num_classes=len(self.labels))
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
        self.model = model.eval()
        self.spec = PreprocessSpec.from_dict(meta["preprocess"])
        t = cfg.get("task") or {}
        self.decode = {"score_threshold": float(score_threshold if score_threshold is not None
                                                else t.get("score_threshold", 0.05)),
                       "nms_iou": float(t.get("nms_iou", 0.6)), "max_detections": int(t.get("max_detections", 100)),
                       "class_agnostic": False, "pre_nms_topk": 1000}
        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))

    def run(self, rgb):
        from vision.runtime.preprocess import normalize, resize_image

        torch = self._torch
        resized, geo = resize_image(rgb, self.spec)
        x = torch.from_numpy(normalize(resized, self.spec))[None]
        with torch.no_grad():
            if self.task == "classification":
                return self.model(x)[0].float().numpy()
            if getattr(self.model, "native_loss", False):
                boxes, scores, labels = self.model.detect(x, self.decode["score_threshold"],
                                                          self.decode["max_detections"])[0]
            else:
                from vision.tasks.detection import _decode

                cls, box, q = (o.float().numpy() for o in self.model(x))
                boxes, scores, labels = _decode(self.model, cls, box, q, self.decode)[0]
        from vision.tasks.detection import to_original

        h, w = rgb.shape[:2]
        boxes = to_original(boxes, (geo["scale_x"], geo["scale_y"]), (geo["pad_x"], geo["pad_y"]), w, h)
        return [(b, float(s), self.labels[int(k)]) for b, s, k in zip(boxes, scores, labels)
                if b[2] > b[0] and b[3] > b[1]]


def load_runner(model: str, *, precision: str = "fp32", threads: int | None = None,
                score_threshold: float | None = None) -> _Runner:
    """The model behind ``model``: an edge bundle (folder, ``bundle.json`` or ``models:/...``) or a checkpoint
    (``.ckpt`` or a training run folder); :class:`DataError` naming the path when it is neither."""
    from vision.runtime.bundle import BUNDLE_FILE, BundleError, load_bundle

    if not model:
        raise ConfigError("predict needs predict.model=PATH (an edge bundle folder, models:/NAME@ALIAS, a .ckpt "
                          "or a training run folder)")
    spec = str(model)
    p = Path(spec).expanduser()
    try:
        if spec.startswith("models:/") or (p / BUNDLE_FILE).is_file() or p.name == BUNDLE_FILE:
            bundle = load_bundle(spec if spec.startswith("models:/") else p)
            info = {"model": spec, "kind": "bundle", "integrity": bundle.doc.get("integrity"),
                    "precision": precision, "bundle_name": bundle.doc.get("name")}
            if bundle.task == "detection":
                r: _Runner = _BundleDetector(bundle, precision, threads, score_threshold)
            elif bundle.task == "classification":
                r = _BundleClassifier(bundle, precision, threads)
            elif bundle.task == "reid":
                r = _BundleEmbedder(bundle, precision, threads)
            else:
                raise DataError(f"{p / BUNDLE_FILE}: a {bundle.task!r} bundle (predict runs detection, "
                                f"classification and reid bundles)")
            r.info = info
            return r
    except BundleError as e:
        raise DataError(str(e)) from e
    if p.is_dir():
        run = p / "run.json"
        if not run.is_file():
            raise DataError(f"{p}: neither an edge bundle ({BUNDLE_FILE}) nor a training run folder (run.json)")
        try:
            best = json.loads(run.read_text()).get("best_checkpoint") or json.loads(run.read_text()).get(
                "last_checkpoint")
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{run}: unreadable run summary ({e})") from e
        if not best:
            raise DataError(f"{run}: the run recorded no checkpoint")
        p = Path(best)
    if not p.is_file():
        raise DataError(f"{p}: model not found (predict.model= a bundle folder, models:/NAME@ALIAS, a .ckpt or a "
                        f"training run folder)")
    from vision.errors import CheckpointError

    try:
        r = _CheckpointModel(p, score_threshold, threads)
    except CheckpointError as e:
        raise DataError(str(e)) from e
    r.info = {"model": str(p), "kind": "checkpoint", "sha256": _sha256(p), "precision": "torch"}
    return r


# -- predict ------------------------------------------------------------------------------------------
def _detections(fo, dets, width: int, height: int):
    out = []
    for b, score, label in dets:
        x1, y1, x2, y2 = (float(v) for v in b)
        out.append(fo.Detection(label=label, bounding_box=[x1 / width, y1 / height, (x2 - x1) / width,
                                                           (y2 - y1) / height], confidence=score))
    return fo.Detections(detections=out)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def register_derived_attrs(dataset, label_field: str, attrs: Sequence[str]) -> None:
    """Record attributes written onto ``label_field``'s objects by evaluation / brain runs (not exported)."""
    dataset.reload()
    derived = {k: list(v) for k, v in (dataset.info.get("derived_label_attrs") or {}).items()}
    cur = derived.setdefault(label_field, [])
    for a in attrs:
        if a not in cur:
            cur.append(a)
    dataset.info["derived_label_attrs"] = derived
    dataset.save()


def _record(dataset, section: str, key: str, value: dict[str, Any]) -> None:
    dataset.reload()
    block = dict(dataset.info.get(section) or {})
    block[key] = value
    dataset.info[section] = block
    dataset.save()


def predict(collection, model: str | _Runner, field: str = "predictions", *, precision: str = "fp32",
            threads: int | None = None, score_threshold: float | None = None, top_k: int = 10,
            progress: bool = False) -> dict[str, Any]:
    """Run ``model`` over ``collection`` and store its output in ``field`` (see the module docstring).

    Returns the run summary (also kept in ``dataset.info["predictions"][field]``); re-id runs add the
    ranking summary of :func:`rank_queries`.
    """
    from vision.runtime.preprocess import read_image

    fo = _fo()
    _check_field(field, "predict.field")
    if field in (DET_FIELD, CLS_FIELD):
        raise ConfigError(f"predict.field={field!r} would overwrite the ground truth; choose another name")
    runner = model if isinstance(model, _Runner) else load_runner(model, precision=precision, threads=threads,
                                                                   score_threshold=score_threshold)
    dataset = collection._dataset
    if collection.media_type != "image":
        raise DataError(f"dataset {dataset.name!r} holds {collection.media_type} samples; predict runs on images "
                        f"(load MOT sequences as frames, without source.as_video, to predict on them)")
    ids, paths = collection.values(["id", "filepath"])
    keys = collection.values("key") if "key" in collection.get_field_schema() else paths
    if not ids:
        raise DataError(f"dataset {dataset.name!r}: the view to predict on has no samples")
    values: list[Any] = []
    errors: list[str | None] = []
    embeddings: dict[int, np.ndarray] = {}
    problems: list[dict[str, str]] = []
    n_objects = 0
    it = range(len(ids))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"predict -> {field}")
    for i in it:
        try:
            rgb = read_image(paths[i])
        except ValueError as e:  # missing / unreadable: listed, the sample keeps no prediction
            problems.append({"key": keys[i], "where": paths[i], "code": "unreadable_image", "reason": str(e)})
            values.append(None)
            errors.append(str(e))
            continue
        out = runner.run(rgb)
        errors.append(None)
        if runner.task == "detection":
            h, w = rgb.shape[:2]
            values.append(_detections(fo, out, w, h))
            n_objects += len(out)
        elif runner.task == "classification":
            logits = np.asarray(out, dtype=np.float64)
            probs = _softmax(logits)
            k = int(np.argmax(probs))
            values.append(fo.Classification(label=runner.labels[k], confidence=float(probs[k]),
                                            logits=logits.tolist()))
        else:
            embeddings[i] = np.asarray(out, dtype=np.float32)
            values.append(None)
    target = dataset.select(ids, ordered=True)
    if runner.task != "reid":
        target.set_values(field, values)
    if any(errors) or f"{field}_error" in dataset.get_field_schema():
        target.set_values(f"{field}_error", errors)
    summary: dict[str, Any] = {
        **runner.info, "task": runner.task, "labels": runner.labels, "field": field, "created_at": _now(),
        "samples": len(ids), "predicted": len(ids) - len(problems), "problems": problems,
    }
    if runner.task == "detection":
        summary["objects"] = n_objects
    if runner.task == "reid":
        summary["ranking"] = rank_queries(collection, ids, keys, embeddings, field, top_k=top_k)
    _record(dataset, "predictions", field, json.loads(json.dumps(summary, default=str)))
    return summary


# -- re-id ranking ------------------------------------------------------------------------------------
def rank_queries(collection, ids: Sequence[str], keys: Sequence[str], embeddings: dict[int, np.ndarray],
                 field: str, *, top_k: int = 10) -> dict[str, Any]:
    """Rank the gallery for every query (Market-1501 protocol: same identity *and* camera, and junk
    identities, are left out of a query's gallery).

    Per query sample: ``field`` = ``fo.Classification`` (the top-1 gallery identity, confidence = cosine
    similarity), ``<field>_ranks`` (gallery keys, best first, ``top_k``), ``<field>_rank_ids`` (their
    identities), ``<field>_first_hit`` (1-based rank of the first correct match, None when the query's
    identity is not in its gallery), ``<field>_ap`` (average precision). The embeddings of every sample
    are kept as a FiftyOne similarity index under brain key ``field`` (sort by similarity in the App).
    Returns rank-1 / rank-5 / mAP over the valid queries.
    """
    from vision.data.reid import JUNK_ID

    fo = _fo()
    dataset = collection._dataset
    schema = collection.get_field_schema()
    for need in ("identity", "role", "camera"):
        if need not in schema:
            raise DataError(f"dataset {dataset.name!r}: re-id ranking needs the {need!r} field (load a Market-1501 "
                            f"or MARS source)")
    idents, roles, cams = collection.values(["identity", "role", "camera"])
    ok = sorted(embeddings)
    q_idx = [i for i in ok if roles[i] == "query"]
    g_idx = [i for i in ok if roles[i] == "gallery" and idents[i] != JUNK_ID]
    if not q_idx or not g_idx:
        raise DataError(f"dataset {dataset.name!r}: re-id ranking needs query and gallery samples (role field), "
                        f"found {len(q_idx)} queries and {len(g_idx)} gallery images among the predicted samples")
    Q = np.stack([embeddings[i] for i in q_idx])
    G = np.stack([embeddings[i] for i in g_idx])
    sims = Q @ G.T
    g_ident = np.array([idents[i] for i in g_idx], dtype=object)
    g_cam = np.array([str(cams[i]) for i in g_idx], dtype=object)
    top1, top5, aps, invalid = [], [], [], []
    per_query: dict[str, dict[str, Any]] = {}
    for qi, i in enumerate(q_idx):
        keep = ~((g_ident == idents[i]) & (g_cam == str(cams[i])))
        order = [j for j in np.argsort(-sims[qi], kind="stable") if keep[j]]
        hits = np.array([g_ident[j] == idents[i] for j in order], dtype=bool)
        first = int(np.argmax(hits)) + 1 if hits.any() else None
        if hits.any():
            prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            ap = float((prec * hits).sum() / hits.sum())
            top1.append(first == 1)
            top5.append(first <= 5)
            aps.append(ap)
        else:
            ap = None
            invalid.append(keys[i])
        best = order[0] if order else None
        per_query[ids[i]] = {
            field: None if best is None else fo.Classification(label=str(g_ident[best]),
                                                               confidence=float(sims[qi, best])),
            f"{field}_ranks": [keys[g_idx[j]] for j in order[:top_k]],
            f"{field}_rank_ids": [str(g_ident[j]) for j in order[:top_k]],
            f"{field}_first_hit": first, f"{field}_ap": ap,
        }
    qids = list(per_query)
    target = dataset.select(qids, ordered=True)
    for name in (field, f"{field}_ranks", f"{field}_rank_ids", f"{field}_first_hit", f"{field}_ap"):
        target.set_values(name, [per_query[q][name] for q in qids])
    if len(ok) > 1:
        import fiftyone.brain as fob

        if field in dataset.list_brain_runs():
            dataset.delete_brain_run(field)
        fob.compute_similarity(dataset.select([ids[i] for i in ok], ordered=True),
                               embeddings=np.stack([embeddings[i] for i in ok]), brain_key=field, backend="sklearn",
                               metric="cosine", progress=False)
    return {"queries": len(q_idx), "gallery": len(g_idx), "valid_queries": len(aps), "invalid_queries": invalid,
            "rank1": float(np.mean(top1)) if top1 else None, "rank5": float(np.mean(top5)) if top5 else None,
            "map": float(np.mean(aps)) if aps else None, "top_k": top_k}


# -- evaluation ---------------------------------------------------------------------------------------
def detection_hardness(confidences: Sequence[float]) -> float | None:
    """Mean binary entropy (bits, 0..1) of the predicted boxes' confidences; None without predictions."""
    ps = [min(max(float(c), 1e-6), 1 - 1e-6) for c in confidences if c is not None]
    if not ps:
        return None
    return float(np.mean([-(p * math.log2(p) + (1 - p) * math.log2(1 - p)) for p in ps]))


def _has_logits(view, pred_field: str) -> bool:
    return all(v is not None and len(v) > 0 for v in view.values(f"{pred_field}.logits"))


def evaluate(collection, pred_field: str = "predictions", eval_key: str = "eval", *, gt_field: str | None = None,
             iou: float = 0.5, classes: Sequence[str] | None = None, mistakenness: bool = True,
             hardness: bool = True) -> dict[str, Any]:
    """Evaluate ``pred_field`` against the ground truth under ``eval_key`` and score the labels (module doc).

    Returns the summary (also kept in ``dataset.info["evaluations"][eval_key]``).
    """
    import fiftyone.brain as fob

    fo = _fo()
    _check_field(eval_key, "eval_key")
    dataset = collection._dataset
    schema = dataset.get_field_schema()
    if pred_field not in schema:
        raise DataError(f"dataset {dataset.name!r} has no prediction field {pred_field!r} (run action=predict first; "
                        f"fields: {', '.join(sorted(schema))})")
    ftype = getattr(schema[pred_field], "document_type", None)
    if ftype is fo.Detections:
        task = "detection"
    elif ftype is fo.Classification:
        task = "classification"
    else:
        raise DataError(f"dataset {dataset.name!r}: field {pred_field!r} holds {getattr(ftype, '__name__', ftype)}, "
                        f"not detections or classifications (re-id runs are ranked by predict itself)")
    gt = gt_field or (DET_FIELD if task == "detection" else CLS_FIELD)
    if gt not in schema:
        raise DataError(f"dataset {dataset.name!r} has no ground-truth field {gt!r}")
    view = collection.exists(pred_field)
    if not len(view):
        raise DataError(f"dataset {dataset.name!r}: no sample of the view has {pred_field!r} predictions")
    for key in (eval_key, f"{eval_key}_mistakenness", f"{eval_key}_hardness"):
        if key in dataset.list_evaluations():
            dataset.delete_evaluation(key)
        if key in dataset.list_brain_runs():
            dataset.delete_brain_run(key)
    classes = list(classes) if classes else None
    out: dict[str, Any] = {"eval_key": eval_key, "pred_field": pred_field, "gt_field": gt, "task": task,
                           "samples": len(view), "created_at": _now()}
    if task == "detection":
        res = view.evaluate_detections(pred_field, gt_field=gt, eval_key=eval_key, iou=iou, compute_mAP=True,
                                       classes=classes, progress=False)
        tp, fp, fn = (int(sum(view.values(f"{eval_key}_{k}"))) for k in ("tp", "fp", "fn"))
        ids, fps, fns = view.values(["id", f"{eval_key}_fp", f"{eval_key}_fn"])
        if f"{eval_key}_errors" not in dataset.get_field_schema():
            dataset.add_sample_field(f"{eval_key}_errors", fo.core.fields.IntField)
        dataset.select(ids, ordered=True).set_values(f"{eval_key}_errors", [int(a) + int(b) for a, b in zip(fps, fns)])
        report = res.report(classes=classes)
        present = sorted(set(view.distinct(f"{gt}.detections.label")))
        out.update({"iou": iou, "mAP": float(res.mAP()), "tp": tp, "fp": fp, "fn": fn,
                    "ap_per_class": {c: float(res.mAP([c])) for c in present},
                    "per_class": {k: {m: float(v) for m, v in d.items()} for k, d in report.items()
                                  if isinstance(d, dict)}})
        register_derived_attrs(dataset, gt, [eval_key, f"{eval_key}_id", f"{eval_key}_iou"])
    else:
        res = view.evaluate_classifications(pred_field, gt_field=gt, eval_key=eval_key, classes=classes,
                                            progress=False)
        report = res.report(classes=classes)
        out.update({"accuracy": float(report.get("accuracy", 0.0)),
                    "per_class": {k: {m: float(v) for m, v in d.items()} for k, d in report.items()
                                  if isinstance(d, dict)},
                    "correct": int(view.count_values(eval_key).get(True, 0)),
                    "wrong": int(view.count_values(eval_key).get(False, 0))})
    if mistakenness:
        mk = f"{eval_key}_mistakenness"
        use_logits = task == "classification" and _has_logits(view, pred_field)
        fob.compute_mistakenness(view, pred_field, label_field=gt, mistakenness_field=mk,
                                 missing_field=f"{eval_key}_missing", spurious_field=f"{eval_key}_spurious",
                                 use_logits=use_logits, progress=False)
        vals = [v for v in view.values(mk) if v is not None]
        out["mistakenness"] = {"field": mk, "max": max(vals) if vals else None,
                               "mean": float(np.mean(vals)) if vals else None}
        if task == "detection":
            register_derived_attrs(dataset, gt, [mk, f"{mk}_loc", f"{eval_key}_spurious"])
            out["mistakenness"].update({"possible_missing": int(sum(v or 0 for v in view.values(f"{eval_key}_missing"))),
                                        "possible_spurious": int(sum(v or 0 for v in
                                                                     view.values(f"{eval_key}_spurious")))})
    if hardness:
        hk = f"{eval_key}_hardness"
        if task == "classification" and _has_logits(view, pred_field):
            fob.compute_hardness(view, pred_field, hardness_field=hk, progress=False)
            method = "fiftyone.brain.compute_hardness (entropy of the softmax of the logits)"
        else:
            ids = view.values("id")
            confs = view.values(f"{pred_field}.detections.confidence") if task == "detection" else \
                [[c] for c in view.values(f"{pred_field}.confidence")]
            if hk not in dataset.get_field_schema():
                dataset.add_sample_field(hk, fo.core.fields.FloatField)
            dataset.select(ids, ordered=True).set_values(hk, [detection_hardness(c or []) for c in confs])
            method = "mean binary entropy (bits) of the predictions' confidences"
        vals = [v for v in view.values(hk) if v is not None]
        out["hardness"] = {"field": hk, "method": method, "max": max(vals) if vals else None,
                           "mean": float(np.mean(vals)) if vals else None}
        dataset.reload()
        brain = dict(dataset.info.get("brain") or {})
        brain[hk] = {"brain_key": hk, "created_at": out["created_at"], "samples": len(view), "method": method,
                     "pred_field": pred_field}
        dataset.info["brain"] = brain
        dataset.save()
    _record(dataset, "evaluations", eval_key, json.loads(json.dumps(out, default=str)))
    return out
