"""``MODEL_CARD.md``: the model card written into every edge bundle (listed in ``bundle.json``, so checksummed).

Sections: intended use (from the task), training data (sources, licences, real/synthetic share, dataset snapshot),
metrics (PyTorch / ONNX fp32 / ONNX int8 on the held-out test split, and by slice: object size, condition,
source, kind, whatever the task's test report has), parity results against the gate's limits, int8 calibration
and known limits (measured int8 drop, synthetic share, classes, input size, test-set size, task-specific ones).
Everything comes from the bundle document, the checkpoint's ``vision`` metadata and the training run's
``run.json`` (when found beside the checkpoint); nothing is invented.
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

RUNNERS = (("torch", "PyTorch"), ("onnx_fp32", "ONNX fp32"), ("onnx_int8", "ONNX int8"))
MAIN_METRICS = {
    "classification": (("top1", "top-1"), ("macro_f1", "macro F1")),
    "detection": (("ap50", "AP50"), ("ap", "AP@[.5:.95]"), ("ap75", "AP75")),
    "reid": (("rank1", "rank-1"), ("rank5", "rank-5"), ("map", "mAP"), ("minp", "mINP")),
}
PRIMARY = {"classification": ("top1", "top-1"), "detection": ("ap50", "AP50"), "reid": ("rank1", "rank-1")}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v == -1.0:  # pycocotools' "undefined" (no ground truth in the slice)
            return "n/a"
        return f"{v:.{digits}f}"
    return str(v)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(c) if not isinstance(c, str) else c.replace("|", "\\|") for c in r) + " |")
    return out


def _origin(src: Any) -> str | None:
    """A card's ``source`` in one short table cell (cards give a string or a mapping with a publisher)."""
    if not src:
        return None
    if isinstance(src, Mapping):
        src = (src.get("publisher") or src.get("url") or src.get("name")
               or "; ".join(f"{k}: {v}" for k, v in src.items()))
    text = " ".join(str(src).split())
    return text if len(text) <= 100 else text[:97] + "..."


def _input_size(doc: Mapping[str, Any]) -> tuple[int, int]:
    h, w = (doc.get("preprocess") or {}).get("size", [0, 0])
    return int(h), int(w)


def intended_use(doc: Mapping[str, Any]) -> str:
    task, labels = doc["task"], list(doc.get("labels") or [])
    h, w = _input_size(doc)
    resize = (doc.get("preprocess") or {}).get("resize", "stretch")
    if task == "classification":
        return (f"Whole-image classification of video-surveillance frames into one of {len(labels)} classes "
                f"({', '.join(labels)}), e.g. camera-health monitoring or inspection. The image is resized "
                f"({resize}) to {w}x{h} pixels; the runtime returns the label, its softmax score and the top-k. "
                f"Decisions with consequences for people should be reviewed by an operator.")
    if task == "detection":
        return (f"Detection of {', '.join(labels)} in video-surveillance frames (input letterboxed to {w}x{h}), "
                f"for counting, zone occupancy, line crossings and privacy masking. Boxes are returned in source "
                f"pixels with a score and a label. It detects object presence only: it does not identify anyone.")
    if task == "reid":
        dim = (doc.get("embedding") or {}).get("dim")
        return (f"Clothing-appearance embeddings ({dim}-d, L2-normalized, cosine metric) of person crops resized to "
                f"{w}x{h}, to link the tracks of the same person across cameras for a short time with temporary, "
                f"random identities that expire (the runtime's ttl). It knows no identity and stores no names. "
                f"Not for identifying people by face, not for face recognition, not for building long-term "
                f"profiles or linking people to named identities.")
    return f"{task} model ({len(labels)} labels)."


def _data_section(meta: Mapping[str, Any], snapshot: str | None) -> tuple[list[str], float | None]:
    """Markdown lines and the synthetic share of the training split (None when unknown)."""
    summary = meta.get("data_summary") or {}
    cards = meta.get("data_cards") or {}
    kinds = summary.get("kinds") or {}
    lines: list[str] = []
    if snapshot:
        lines.append(f"Dataset snapshot: `{snapshot}`.")
        lines.append("")
    splits = [s for s in ("train", "val", "test") if isinstance(summary.get(s), Mapping)]

    def count(split: str, src: str) -> int:
        v = (summary[split].get("by_source") or {}).get(src, 0)
        return int(v.get("images", 0)) if isinstance(v, Mapping) else int(v or 0)

    sources = list(kinds) or sorted({s for sp in splits for s in (summary[sp].get("by_source") or {})})
    card_list = list(cards.items())
    by_source_card = dict(zip(sources, card_list)) if len(card_list) == len(sources) else {}
    share = None
    if sources and splits:
        rows = []
        for src in sources:
            card = by_source_card.get(src)
            licence = card[1].get("licence") if card else None
            origin = _origin(card[1].get("source")) if card else None
            rows.append([src, kinds.get(src, "real"), licence or "-", origin or "-",
                         *[count(sp, src) for sp in splits]])
        lines += _table(["source", "kind", "licence", "origin", *[f"{sp} images" for sp in splits]], rows)
        if "train" in splits:
            total = sum(count("train", s) for s in sources)
            syn = sum(count("train", s) for s in sources if kinds.get(s, "real") != "real")
            if total:
                share = syn / total
                lines += ["", f"Training split: {total} images, real {_pct(1 - share)}, synthetic (incl. refined) "
                              f"{_pct(share)}."]
        mix = summary.get("mix")
        if mix:
            lines.append(f"Batch mixing: `{mix}`.")
    if cards and not by_source_card:
        lines += ["", "Dataset cards:", ""]
        lines += _table(["card", "licence", "origin"],
                        [[name, c.get("licence") or "-", _origin(c.get("source")) or "-"] for name, c in card_list])
    if not lines:
        lines.append("The checkpoint records no data summary.")
    return lines, share


def _metrics_section(task: str, report: Mapping[str, Any]) -> list[str]:
    metrics = MAIN_METRICS.get(task, ())
    rows = []
    for key, title in RUNNERS:
        entry = report.get(key)
        if isinstance(entry, Mapping):
            rows.append([title, *[entry.get(m) for m, _ in metrics]])
    lines = [f"Held-out {report.get('split', 'test')} split ({report.get('num_images', '?')} images"
             + (f", {report['num_queries']} queries" if "num_queries" in report else "") + "):", ""]
    return lines + _table(["model", *[t for _, t in metrics]], rows)


def _slice_rows(task: str, report: Mapping[str, Any], run_test: Mapping[str, Any] | None) -> list[str]:
    """Metrics by slice: the parity report's (exported models) where it has them, else the training run's test
    report (PyTorch, best checkpoint)."""
    lines: list[str] = []
    present = [(k, t) for k, t in RUNNERS if isinstance(report.get(k), Mapping)]
    if task == "detection":
        if any("size" in report[k] for k, _ in present):
            lines += ["By object height (pixels in the source image), AP50 / AP:", ""]
            names = next(list(report[k]["size"]) for k, _ in present if "size" in report[k])
            rows = []
            for name in names:
                row: list[Any] = [name, next((report[k]["size"][name].get("num_gt") for k, _ in present
                                              if name in report[k].get("size", {})), None)]
                for k, _ in present:
                    s = report[k].get("size", {}).get(name, {})
                    row.append(f"{_fmt(s.get('ap50'))} / {_fmt(s.get('ap'))}")
                rows.append(row)
            lines += _table(["height", "objects", *[t for _, t in present]], rows) + [""]
        for field in next((list(report[k].get("slices") or {}) for k, _ in present), []):
            values = report[present[0][0]]["slices"][field]
            if not values:
                continue
            lines += [f"By `{field}`, AP50 / AP:", ""]
            rows = []
            for value, s0 in values.items():
                row = [value, s0.get("num_images"), s0.get("num_gt")]
                for k, _ in present:
                    s = (report[k].get("slices") or {}).get(field, {}).get(value, {})
                    row.append(f"{_fmt(s.get('ap50'))} / {_fmt(s.get('ap'))}")
                rows.append(row)
            lines += _table([field, "images", "objects", *[t for _, t in present]], rows) + [""]
        return lines
    if task == "reid":
        srcs = next((list(report[k].get("by_source") or {}) for k, _ in present), [])
        if srcs:
            lines += ["By source (each source's queries against its own gallery), rank-1 / mAP:", ""]
            rows = []
            for src in srcs:
                row: list[Any] = [src, (report[present[0][0]]["by_source"][src] or {}).get("num_queries")]
                for k, _ in present:
                    s = (report[k].get("by_source") or {}).get(src, {})
                    row.append(f"{_fmt(s.get('rank1'))} / {_fmt(s.get('map'))}")
                rows.append(row)
            lines += _table(["source", "queries", *[t for _, t in present]], rows) + [""]
        return lines
    slices = (run_test or {}).get("slices") or {}
    if slices:
        lines += ["By slice (PyTorch, the training run's test report), top-1:", ""]
        for field, values in slices.items():
            rows = [[value, s.get("num_images"), s.get("top1")] for value, s in values.items()]
            lines += [f"`{field}`:", ""] + _table([field, "images", "top-1"], rows) + [""]
    per_class = (run_test or {}).get("per_class") or {}
    if per_class:
        lines += ["Per class (PyTorch, the training run's test report):", ""]
        lines += _table(["class", "support", "precision", "recall", "F1"],
                        [[c, v.get("support"), v.get("precision"), v.get("recall"), v.get("f1")]
                         for c, v in per_class.items()]) + [""]
    return lines


def _parity_section(task: str, report: Mapping[str, Any]) -> list[str]:
    limits = report.get("limits") or {}
    rows: list[list[Any]] = []
    fp32, int8, ref = report.get("onnx_fp32"), report.get("onnx_int8"), report.get("torch") or {}
    if task == "classification":
        if fp32:
            tol = limits.get("fp32_atol", 0) + limits.get("fp32_rtol", 0) * ref.get("max_abs_logit", 0)
            rows.append(["ONNX fp32 max |logit - PyTorch|", f"{fp32.get('max_abs_logit_diff', 0):.2e}",
                         f"<= {tol:.2e}"])
            rows.append(["ONNX fp32 top-1 agreement with PyTorch", fp32.get("agreement_with_torch"), "-"])
        if int8:
            rows.append(["int8 top-1 drop", int8.get("top1_drop"), f"<= {limits.get('max_int8_drop')}"])
            rows.append(["int8 top-1 agreement with PyTorch", int8.get("agreement_with_torch"), "-"])
    elif task == "detection":
        if fp32:
            rows.append(["ONNX fp32 |AP50 - PyTorch|", fp32.get("ap50_diff"), f"<= {limits.get('max_fp32_ap_diff')}"])
            rows.append(["ONNX fp32 |AP - PyTorch|", fp32.get("ap_diff"), f"<= {limits.get('max_fp32_ap_diff')}"])
        if int8:
            rows.append(["int8 AP50 drop", int8.get("ap50_drop"), f"<= {limits.get('max_int8_drop')}"])
            rows.append(["int8 AP drop", int8.get("ap_drop"), "-"])
    elif task == "reid":
        if fp32:
            rows.append(["ONNX fp32 mean cosine with PyTorch", fp32.get("mean_cosine"),
                         f">= {limits.get('min_cosine_fp32')}"])
        if int8:
            rows.append(["int8 mean cosine with PyTorch", int8.get("mean_cosine"),
                         f">= {limits.get('min_cosine_int8')}"])
            rows.append(["int8 rank-1 drop", int8.get("rank1_drop"), f"<= {limits.get('max_int8_drop')}"])
            rows.append(["int8 mAP drop", int8.get("map_drop"), f"<= {limits.get('max_int8_drop')}"])
    lines = [f"Parity gate: **{'passed' if report.get('passed') else 'FAILED'}** (measured through the runtime "
             f"itself on the held-out split).", ""]
    return lines + _table(["check", "measured", "limit"], rows)


def _limits(doc: Mapping[str, Any], report: Mapping[str, Any], share: float | None,
            extra: Sequence[str]) -> list[str]:
    task, labels = doc["task"], list(doc.get("labels") or [])
    h, w = _input_size(doc)
    out: list[str] = []
    key, title = PRIMARY.get(task, (None, None))
    int8 = report.get("onnx_int8")
    if int8 and key and isinstance(report.get("torch"), Mapping):
        change = int8.get(key, 0) - report["torch"].get(key, 0)
        out.append(f"int8 changes the held-out {title} by {change * 100:+.2f} points against PyTorch "
                   f"({_fmt(report['torch'].get(key))} -> {_fmt(int8.get(key))})"
                   + ("; use the fp32 model where that matters." if change < 0 else "."))
    n = report.get("num_queries") or report.get("num_images")
    if n:
        se = 100 * math.sqrt(0.25 / n)
        out.append(f"The test split is small ({n} {'queries' if 'num_queries' in report else 'images'}): "
                   f"metrics carry roughly +-{2 * se:.0f} points of sampling uncertainty (95%, worst case).")
    if share is not None:
        if share >= 0.999:
            out.append("Trained on synthetic (generated) data only: accuracy on real cameras is not established "
                       "by the training data; validate on footage from the target cameras before use.")
        elif share > 0:
            out.append(f"{_pct(share)} of the training images are synthetic; see the slices by source / kind "
                       f"for how real and synthetic data compare.")
    if task == "classification":
        out.append(f"Always answers one of its {len(labels)} classes ({', '.join(labels)}); it has no 'unknown' "
                   f"class, so images unlike the training data still get one of them (check the score).")
    elif task == "detection":
        out.append(f"Detects only {', '.join(labels)}; everything else is ignored.")
        out.append(f"Fixed input {w}x{h} (letterboxed): small objects in large frames shrink a lot; see the "
                   f"'<50px' height slice, and tile or crop large frames if small objects matter.")
    elif task == "reid":
        out.append("Appearance (clothing) based: people who change clothes, or who dress alike, are not told "
                   "apart; identities are temporary and random per run.")
        out.append("Not for identifying people by face or by name.")
    if task != "detection":
        out.append(f"Fixed input {w}x{h} pixels ({(doc.get('preprocess') or {}).get('resize', 'stretch')}); "
                   f"fine detail smaller than the resized image keeps is lost.")
    out += [str(x) for x in extra]
    return out


def render(doc: Mapping[str, Any], meta: Mapping[str, Any], *, name: str, run_test: Mapping[str, Any] | None = None,
           run_note: str | None = None, intended: str | None = None, extra_limits: Sequence[str] = ()) -> str:
    """The markdown model card of bundle ``name`` (``doc``: its bundle.json content before the file listing)."""
    task = doc["task"]
    report = doc.get("parity") or {}
    prov = doc.get("provenance") or {}
    snapshot = prov.get("dataset_snapshot")
    data_lines, share = _data_section(meta, snapshot)
    h, w = _input_size(doc)
    model = prov.get("model") or {}
    training = prov.get("mlflow") or {}
    lines = [f"# Model card: {name}", "",
             f"- Task: **{task}**; labels: {', '.join(doc.get('labels') or []) or '(none: identity-free embedder)'}",
             f"- Model: {model.get('arch', '?')} (width {model.get('width_mult', '?')}), ONNX opset "
             f"{prov.get('opset', '?')}, precisions {', '.join(sorted(doc.get('models') or {}))}, input {w}x{h}",
             f"- Training run: {'`' + training['run_id'] + '`' if training.get('run_id') else 'not tracked'}"
             + (f" ({training.get('tracking_uri')})" if training.get("tracking_uri") else ""),
             f"- Checkpoint: `{prov.get('checkpoint', '?')}`",
             f"- Card written: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}; every file of the bundle, this card included, "
             f"is checksummed in `bundle.json`.",
             "", "## Intended use", "", intended or intended_use(doc),
             "", "## Training data", "", *data_lines,
             "", "## Metrics", "", *_metrics_section(task, report), ""]
    slices = _slice_rows(task, report, run_test)
    if slices:
        lines += ["### By slice", ""]
        if run_note and task == "classification":
            lines += [run_note, ""]
        lines += slices
    lines += ["## Parity", "", *_parity_section(task, report), ""]
    cal = doc.get("calibration")
    if cal:
        by = cal.get("by_kind") or cal.get("by_source") or cal.get("by_class")
        nodes = list(cal.get("fp32_nodes") or [])
        kept = ", ".join(nodes[:6]) + (f", ... ({len(nodes)} nodes in all)" if len(nodes) > 6 else "")
        lines += ["## int8 calibration", "",
                  f"{cal.get('num_images', '?')} {cal.get('split', '?')} images, method {cal.get('method')}, "
                  f"per-channel {_fmt(cal.get('per_channel'))}; kept in float: {kept or 'nothing'}"
                  + (f"; images by group: {by}" if by else ""), ""]
    lines += ["## Known limits", "", *[f"- {x}" for x in _limits(doc, report, share, extra_limits)], ""]
    return "\n".join(lines)
