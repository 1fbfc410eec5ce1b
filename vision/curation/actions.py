"""The curation CLI's actions (``python -m vision.curate``) on plain config dicts; each returns a JSON-able dict."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from vision.curation.load import CLS_FIELD, DET_FIELD, get_dataset, load_source
from vision.errors import ConfigError, DataError

__all__ = ["load", "dedup", "export", "summary", "snapshot_view"]


def load(dataset: str, source: Mapping[str, Any]) -> dict[str, Any]:
    if not source.get("path"):
        raise ConfigError("load needs source.path=PATH (a COCO JSON, or a YOLO / VOC / MOT / class-folder / "
                          "Market-1501 folder)")
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


def snapshot_view(dataset: str, cfg: Mapping[str, Any]):
    """The view a snapshot config selects: saved view, then tags, excluded tags and splits."""
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
