"""Review in the FiftyOne App: saved views, the App server, and reading back the tags reviewers wrote.

Saved views (:func:`save_review_views`, ``python -m vision.curate action=views``), saved on the dataset
so they appear in the App's view bar and can be exported as snapshots (``snapshot.saved_view=NAME``):

``likely_mistakes``
    samples whose ``<eval_key>_mistakenness`` is at least ``mistakes_threshold``, most likely first;
    ground-truth objects filtered to the likely mistakes (needs ``action=predict`` with evaluation).
``errors``
    samples with false positives or false negatives under ``eval_key``, most errors first.
``hard``
    samples sorted by ``<eval_key>_hardness`` (hardest first).
``small_objects``
    samples with ground-truth boxes under ``small_px`` pixels tall, those boxes only.
``night_frames``
    ``condition`` (or the generator's ``provenance.params.time_of_day``) in ``night`` (default night,
    night_ir).
``duplicates``
    samples in an exact or near-duplicate group of ``brain_key`` (``action=dedup``), grouped together.
``leaks``
    samples with a near duplicate in another split.

A view whose fields do not exist yet (no evaluation, no dedup) is reported as skipped with the reason.
:func:`tag_report` reads back the sample and label tags (whoever wrote them: the App, another process).
:func:`launch` serves the App (``action=app``).
"""
from __future__ import annotations

import datetime as _dt
import time
from collections import defaultdict
from typing import Any, Sequence

from vision.curation.load import DET_FIELD
from vision.errors import ConfigError, DataError

__all__ = ["VIEWS", "build_views", "save_review_views", "tag_report", "launch"]

VIEWS = ("likely_mistakes", "errors", "hard", "small_objects", "night_frames", "duplicates", "leaks")


def build_views(dataset, *, eval_key: str = "eval", brain_key: str = "dedup", small_px: float = 50.0,
                mistakes_threshold: float = 0.5, night: Sequence[str] = ("night", "night_ir"),
                label_field: str = DET_FIELD) -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
    """``({name: (view, description)}, {skipped name: reason})`` for the review views (module doc)."""
    from fiftyone import ViewField as F

    schema = dataset.get_field_schema(flat=True)
    views: dict[str, tuple[Any, str]] = {}
    skipped: dict[str, str] = {}
    mk, hk, errs = f"{eval_key}_mistakenness", f"{eval_key}_hardness", f"{eval_key}_errors"

    if mk in schema:
        v = dataset.match(F(mk) >= mistakes_threshold).sort_by(mk, reverse=True)
        if f"{label_field}.detections.{mk}" in schema:
            v = v.filter_labels(label_field, F(mk) >= mistakes_threshold, only_matches=False)
        views["likely_mistakes"] = (v, f"{mk} >= {mistakes_threshold}, most likely label mistakes first")
    else:
        skipped["likely_mistakes"] = f"no {mk} field (run action=predict with evaluation, eval_key={eval_key})"
    if errs in schema:
        views["errors"] = (dataset.match(F(errs) > 0).sort_by(errs, reverse=True),
                           f"samples with false positives / negatives under {eval_key}, most first")
    elif f"{eval_key}" in schema and schema[eval_key].__class__.__name__ == "BooleanField":
        views["errors"] = (dataset.match(F(eval_key) == False).sort_by(f"{eval_key}_hardness" if hk in schema  # noqa: E712
                                                                        else "filepath", reverse=hk in schema),
                           f"misclassified samples under {eval_key}")
    else:
        skipped["errors"] = f"no evaluation {eval_key!r} (run action=predict with evaluation)"
    if hk in schema:
        views["hard"] = (dataset.exists(hk).sort_by(hk, reverse=True), f"{hk}, hardest first")
    else:
        skipped["hard"] = f"no {hk} field (run action=predict with evaluation)"
    if f"{label_field}.detections" in schema and "height" in schema:
        small = F("bounding_box")[3] * F("$height") < small_px
        views["small_objects"] = (dataset.filter_labels(label_field, small),
                                  f"ground-truth boxes under {small_px:g} px tall")
    else:
        skipped["small_objects"] = f"no {label_field} detections"
    night = list(night)
    conds = []
    if "condition" in schema:
        conds.append(F("condition").is_in(night))
    if "provenance.params.time_of_day" in schema or "provenance" in schema:
        conds.append(F("provenance.params.time_of_day").is_in(night))
    if conds:
        expr = conds[0] if len(conds) == 1 else (conds[0] | conds[1])
        views["night_frames"] = (dataset.match(expr), f"condition / time of day in {night}")
    else:
        skipped["night_frames"] = "no condition or provenance fields"
    eg, ng, lk = f"{brain_key}_exact_group", f"{brain_key}_near_group", f"{brain_key}_leak"
    if ng in schema:
        views["duplicates"] = (dataset.match((F(ng) != None) | (F(eg) != None)).sort_by(ng),  # noqa: E711
                               f"exact / near duplicates ({brain_key}), grouped")
        views["leaks"] = (dataset.match(F(lk) == True).sort_by(ng),  # noqa: E712
                          f"near duplicates across splits ({brain_key})")
    else:
        for name in ("duplicates", "leaks"):
            skipped[name] = f"no {ng} field (run action=dedup, dedup.brain_key={brain_key})"
    return views, skipped


def save_review_views(dataset, names: Sequence[str] | None = None, **kw: Any) -> dict[str, Any]:
    """Build and save the review views on the dataset (overwriting older versions of the same views).

    Returns ``{"saved": {name: {"samples", "description"}}, "skipped": {name: reason}}``.
    """
    names = list(names or VIEWS)
    bad = [n for n in names if n not in VIEWS]
    if bad:
        raise ConfigError(f"unknown review view(s) {bad} (views.names among {list(VIEWS)})")
    views, skipped = build_views(dataset, **kw)
    saved = {}
    for name in names:
        if name not in views:
            continue
        view, desc = views[name]
        dataset.save_view(name, view, description=desc, overwrite=True)
        saved[name] = {"samples": len(view), "description": desc}
    return {"dataset": dataset.name, "saved": saved,
            "skipped": {k: v for k, v in skipped.items() if k in names},
            "saved_views": dataset.list_saved_views()}


def tag_report(collection, label_fields: Sequence[str] | None = None, max_keys: int | None = None) -> dict[str, Any]:
    """Sample and label tags as they are in the database now (reloaded): counts, and the tagged samples'
    keys per tag (label tags: the keys of the samples holding a tagged object, with the object count)."""
    dataset = collection._dataset
    dataset.reload()
    schema = dataset.get_field_schema()
    if label_fields is None:
        label_fields = collection._get_label_fields()
    else:
        missing = [f for f in label_fields if f not in schema]
        if missing:
            raise DataError(f"dataset {dataset.name!r} has no label field(s) {missing}")
    key_field = "key" if "key" in schema else "filepath"
    sample_counts = collection.count_sample_tags()
    per_tag: dict[str, list[str]] = defaultdict(list)
    for key, tags in zip(*collection.values([key_field, "tags"])):
        for t in tags or []:
            per_tag[t].append(key)
    label_counts: dict[str, dict[str, int]] = {}
    label_keys: dict[str, dict[str, dict[str, int]]] = {}
    for field in label_fields:
        counts = collection.count_label_tags(label_fields=field)
        if not counts:
            continue
        label_counts[field] = dict(sorted(counts.items()))
        doc = getattr(schema[field], "document_type", None)
        list_attr = getattr(doc, "_LABEL_LIST_FIELD", None)  # "detections" for fo.Detections
        path = f"{field}.{list_attr}.tags" if list_attr else f"{field}.tags"
        by_tag: dict[str, dict[str, int]] = defaultdict(dict)
        for key, tl in zip(*collection.values([key_field, path])):
            objs = (tl or []) if list_attr else [tl or []]
            for obj_tags in objs:
                for t in obj_tags or []:
                    by_tag[t][key] = by_tag[t].get(key, 0) + 1
        label_keys[field] = {t: dict(sorted(v.items())) for t, v in sorted(by_tag.items())}

    def cut(keys: list[str]) -> list[str]:
        keys = sorted(keys)
        return keys if max_keys is None else keys[:max_keys]

    return {"dataset": dataset.name, "samples": len(collection),
            "read_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "sample_tags": dict(sorted(sample_counts.items())),
            "sample_tag_keys": {t: cut(v) for t, v in sorted(per_tag.items())},
            "label_tags": label_counts, "label_tag_keys": label_keys}


def launch(dataset, *, port: int = 5151, address: str = "127.0.0.1", view=None, wait: bool = True,
           ready_file: str | None = None, on_ready=None, log_file: str | None = None) -> dict[str, Any]:
    """Serve the FiftyOne App for ``dataset`` (or ``view``) on ``address:port`` and, with ``wait``, block
    until interrupted (SIGINT / SIGTERM). The server runs in a child process (:mod:`vision.curation.app_server`);
    a FiftyOne session (remote mode: no browser opened here) shows ``dataset`` / ``view`` in it.
    Returns where it is served (without ``wait``: also the server's ``server_pid``, left running)."""
    import fiftyone as fo

    from vision.curation.app_server import start

    if not 0 < int(port) < 65536:
        raise ConfigError(f"app.port must be a TCP port (1-65535), got {port}")
    server = start(int(port), address, log_file=log_file)  # FiftyOne's session then connects to it
    try:
        session = fo.launch_app(view if view is not None else dataset, port=int(port), address=address,
                                remote=True, auto=False)
    except Exception:
        server.terminate()
        raise
    url = f"http://{address}:{int(port)}/"
    info = {"dataset": dataset.name, "url": url, "port": int(port), "address": address,
            "view": None if view is None else str(getattr(view, "name", None) or "view"),
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if on_ready is not None:
        on_ready(info)
    if ready_file:
        from vision.utils.io import atomic_write_json

        atomic_write_json(ready_file, info)
    if not wait:
        info["server_pid"] = server.pid
        return info
    try:
        while server.poll() is None:
            time.sleep(1.0)
        raise DataError(f"the FiftyOne App server on {address}:{port} stopped (exit code {server.returncode})"
                        + (f"; see {log_file}" if log_file else ""))
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except Exception:  # noqa: BLE001
                server.kill()
        del session
    return info

