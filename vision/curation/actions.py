"""The curation CLI's actions (``python -m vision.curate``) on plain config dicts; each returns a JSON-able dict."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from vision.curation.load import CLS_FIELD, DET_FIELD, get_dataset, load_source
from vision.errors import ConfigError, DataError

__all__ = ["load", "dedup", "export", "summary", "snapshot_view", "select_view", "predict", "views", "tags", "app"]


def load(dataset: str, source: Mapping[str, Any]) -> dict[str, Any]:
    if not source.get("path"):
        raise ConfigError("load needs source.path=PATH (a COCO JSON, or a YOLO / VOC / MOT / class-folder / "
                          "Market-1501 folder)")
    if source.get("as_video"):
        from vision.curation.load import load_mot_video

        fmt = source.get("format") or "auto"
        if fmt not in ("auto", "mot"):
            raise ConfigError(f"source.as_video=true loads MOT sequences, not format={fmt}")
        rep = load_mot_video(dataset, source["path"], video_dir=source.get("video_dir") or "videos",
                             name=source.get("name"), frames_glob=source.get("frames_glob"),
                             label=source.get("label") or "person", split=source.get("split"),
                             licence=source.get("licence"), kind=source.get("kind"), camera=source.get("camera"),
                             card=source.get("card"), fps=source.get("fps"),
                             on_existing=source.get("on_existing") or "skip", report=source.get("report"))
        out = rep.to_dict()
        if len(out["problems"]) > 20:
            out["problems"] = out["problems"][:20] + [{"more": len(rep.problems) - 20}]
        return out
    rep = load_source(dataset, source["path"], source.get("format") or "auto", name=source.get("name"),
                      split=source.get("split"), licence=source.get("licence"), kind=source.get("kind"),
                      camera=source.get("camera"), card=source.get("card"), classes=source.get("classes"),
                      images=source.get("images"), annotations=source.get("annotations"),
                      images_root=source.get("images_root"), frames_glob=source.get("frames_glob"),
                      label=source.get("label") or "person", on_existing=source.get("on_existing") or "skip",
                      report=source.get("report"))
    out = rep.to_dict()
    if len(out["problems"]) > 20:  # the full list is in dataset.info["load_reports"] (and source.report)
        out["problems"] = out["problems"][:20] + [{"more": len(rep.problems) - 20}]
    return out


def dedup(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    from vision.curation.brain import find_duplicates

    ds = get_dataset(dataset)
    s = find_duplicates(ds, cfg.get("brain_key") or "dedup", threshold=int(cfg.get("threshold", 8)),
                        min_similarity=float(cfg.get("min_similarity", 0.9)), k=int(cfg.get("k", 3)),
                        split_field=cfg.get("split_field") or "split")
    return {k: v for k, v in s.items() if k not in ("exact_groups", "near_groups")} | {
        "leak_pairs": s["leak_pairs"][:20]}


def select_view(dataset: str, cfg: Mapping[str, Any]):
    """The view a config block selects: ``saved_view``, then ``tags``, ``exclude_tags`` and ``splits``."""
    ds = get_dataset(dataset)  # configures fiftyone before anything imports it
    from fiftyone import ViewField as F

    if cfg.get("saved_view"):
        if cfg["saved_view"] not in ds.list_saved_views():
            raise DataError(f"dataset {dataset!r} has no saved view {cfg['saved_view']!r} "
                            f"(saved views: {', '.join(ds.list_saved_views()) or 'none'})")
        view = ds.load_saved_view(cfg["saved_view"])
    else:
        view = ds.view()
    if cfg.get("tags"):
        view = view.match_tags(list(cfg["tags"]))
    if cfg.get("exclude_tags"):
        view = view.match_tags(list(cfg["exclude_tags"]), bool=False)
    if cfg.get("splits"):
        view = view.match(F("split").is_in(list(cfg["splits"])))
    return view


def snapshot_view(dataset: str, cfg: Mapping[str, Any]):
    """The view a snapshot config selects: saved view, then tags, excluded tags and splits."""
    return select_view(dataset, cfg)


def export(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    from vision.curation.export import export_snapshot, read_manifest

    if not cfg.get("name"):
        raise ConfigError("export-snapshot needs snapshot.name=NAME")
    view = snapshot_view(dataset, cfg)
    path = export_snapshot(view, cfg["name"], cfg.get("root") or "snapshots", formats=cfg.get("formats") or ["coco"],
                           parent=cfg.get("parent"), classes=cfg.get("classes"), images=cfg.get("images") or "copy",
                           note=cfg.get("note"))
    m = read_manifest(path)
    return {"snapshot": str(path), "snapshot_id": m["snapshot_id"], "counts": m["counts"], "parent": m["parent"],
            "formats": m["formats"]}


def _sorted(counts: Mapping[Any, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])) if k is not None}


def summary(dataset: str, snapshots_root: str | None = None) -> dict[str, Any]:
    """Counts per source / kind / split / licence / class, load problems, brain results and snapshots."""
    ds = get_dataset(dataset)
    schema = ds.get_field_schema()

    def counts(field: str) -> dict[str, int]:
        return dict(sorted(Counter(str(v) for v in ds.values(field)).items())) if field in schema else {}

    out: dict[str, Any] = {"dataset": ds.name, "samples": len(ds), "persistent": ds.persistent}
    for f in ("source", "kind", "split", "licence", "camera"):
        out[f"per_{f}"] = counts(f)
    if DET_FIELD in schema:
        out["boxes"] = ds.count(f"{DET_FIELD}.detections")
        out["boxes_per_class"] = _sorted(ds.count_values(f"{DET_FIELD}.detections.label"))
    if CLS_FIELD in schema:
        out["per_class"] = _sorted(ds.count_values(f"{CLS_FIELD}.label"))
    out["tags"] = _sorted(ds.count_sample_tags())
    reports = ds.info.get("load_reports", [])
    out["loads"] = [{k: r.get(k) for k in ("source", "format", "path", "read", "added", "existing", "updated",
                                            "problems_by_code", "created_at")} for r in reports]
    out["problems"] = sum(len(r.get("problems", [])) for r in reports)
    out["brain"] = {k: {x: v.get(x) for x in ("samples", "analysed", "exact_duplicates", "near_duplicates",
                                               "near_duplicate_groups", "leaks", "leaked_samples", "uniqueness",
                                               "created_at")}
                    for k, v in ds.info.get("brain", {}).items()}
    out["brain_runs"] = ds.list_brain_runs()
    out["predictions"] = {k: {x: v.get(x) for x in ("model", "kind", "task", "samples", "predicted", "objects",
                                                     "created_at")} | {"problems": len(v.get("problems") or [])}
                          for k, v in (ds.info.get("predictions") or {}).items()}
    out["evaluations"] = {k: {x: v.get(x) for x in ("pred_field", "gt_field", "task", "samples", "mAP", "tp", "fp",
                                                     "fn", "accuracy", "correct", "wrong", "created_at")}
                          for k, v in (ds.info.get("evaluations") or {}).items()}
    out["saved_views"] = ds.list_saved_views()
    out["media_type"] = ds.media_type
    snaps = []
    if snapshots_root and Path(snapshots_root).is_dir():
        from vision.curation.export import list_snapshots, read_manifest

        for name in list_snapshots(snapshots_root):
            m = read_manifest(Path(snapshots_root) / name)
            if m.get("dataset") == ds.name:
                snaps.append({"name": name, "snapshot_id": m["snapshot_id"], "created_at": m["created_at"],
                              "samples": m["counts"]["samples"], "parent": m["parent"]})
    out["snapshots"] = snaps
    return out


def predict(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``predict.model`` over the selected view into ``predict.field``; evaluate unless ``eval_key`` is null."""
    from vision.curation.predict import evaluate, predict as run_predict

    view = select_view(dataset, cfg)
    if not len(view):
        raise DataError(f"dataset {dataset!r}: the selected view has no samples (predict.saved_view / tags / splits)")
    field = cfg.get("field") or "predictions"
    out = run_predict(view, cfg.get("model"), field, precision=cfg.get("precision") or "fp32",
                      threads=cfg.get("threads"), score_threshold=cfg.get("score_threshold"),
                      top_k=int(cfg.get("top_k") or 10))
    res: dict[str, Any] = {"predict": {k: v for k, v in out.items() if k != "problems"} | {
        "problems": out["problems"][:20]}}
    if cfg.get("eval_key") and out["task"] != "reid":
        res["evaluation"] = evaluate(view, field, cfg["eval_key"], gt_field=cfg.get("gt_field"),
                                     iou=float(cfg.get("iou", 0.5)), classes=cfg.get("classes"),
                                     mistakenness=bool(cfg.get("mistakenness", True)),
                                     hardness=bool(cfg.get("hardness", True)))
    return res


def views(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Save the review views (:mod:`vision.curation.review`) on the dataset."""
    from vision.curation.review import save_review_views

    ds = get_dataset(dataset)
    return save_review_views(ds, cfg.get("names"), eval_key=cfg.get("eval_key") or "eval",
                             brain_key=cfg.get("brain_key") or "dedup", small_px=float(cfg.get("small_px", 50)),
                             mistakes_threshold=float(cfg.get("mistakes_threshold", 0.5)),
                             night=list(cfg.get("night") or ["night", "night_ir"]))


def tags(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Sample / label tags as they are now (written in the App or anywhere else), optionally to a JSON file."""
    from vision.curation.review import tag_report
    from vision.utils.io import atomic_write_json

    rep = tag_report(select_view(dataset, cfg), cfg.get("label_fields"))
    if cfg.get("output"):
        atomic_write_json(cfg["output"], rep)
        rep = rep | {"output": str(cfg["output"])}
    return rep


def app(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Serve the FiftyOne App on ``app.address:app.port`` (blocks until interrupted with ``app.wait``)."""
    import json
    import sys

    from vision.curation.review import launch

    ds = get_dataset(dataset)
    view = None
    if cfg.get("saved_view"):
        view = select_view(dataset, {"saved_view": cfg["saved_view"]})

    def ready(info: dict[str, Any]) -> None:  # the URL on stdout at once (the JSON result comes at the end)
        print(f"FiftyOne App serving {info['dataset']} at {info['url']}", flush=True)
        print(json.dumps({"app": info}), flush=True)
        sys.stdout.flush()

    import signal

    def stop(signum, frame):  # SIGTERM ends the App like Ctrl-C (the server child is stopped too)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    return launch(ds, port=int(cfg.get("port") or 5151), address=cfg.get("address") or "127.0.0.1", view=view,
                  wait=bool(cfg.get("wait", True)), ready_file=cfg.get("ready_file"), on_ready=ready,
                  log_file=cfg.get("log_file"))
