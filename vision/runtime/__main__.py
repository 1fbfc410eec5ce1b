"""``python -m vision.runtime BUNDLE INPUT... --out results.jsonl``: run an edge bundle.

Classification bundles: image files or folders, one JSON line per image (label, score, top-k).
Detection bundles: image files, folders, video files or streams (rtsp://, http(s)://, a camera
index), one JSON line per image (``{"file", "detections"}``) or per video frame (``{"source",
"frame", "time", "detections", "zones", "lines"}``); optionally an annotated video (``--video-out``)
or annotated frames (``--frames-out``), persons pixelated with ``--privacy``, zone occupancy and
line counts with ``--zones``, and per-stage timings (``--timings``).
Re-identification bundles: person crops (files or folders) are the gallery; ``--query`` crops are ranked
against it, one JSON line per query (``{"query", "matches": [{"file", "distance"}]}``, cosine distance).
Embeddings identify people, so they are written only when ``--save-embeddings`` asks for them.

BUNDLE is a bundle folder or a registered model, ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` (needs
MLflow; ``--tracking-uri`` or MLFLOW_TRACKING_URI; downloaded once per version into ``--cache-dir`` and refused
unless it is exactly the bundle that was registered).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from vision.runtime.bundle import BundleError
from vision.runtime.preprocess import IMAGE_EXTENSIONS
from vision.runtime.registry import add_registry_args, open_bundle

REID_ONLY = ("query", "max_distance", "save_embeddings")
DETECTION_ONLY = ("video_out", "frames_out", "privacy", "zones", "every", "max_frames", "score_threshold",
                  "timings", "video_fps")


def expand_inputs(inputs: list[str]) -> list[Path]:
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: input not found")
    return out


def _progress(i: int, n: int, t0: float) -> None:
    if sys.stderr.isatty() or i == n:
        rate = i / max(time.perf_counter() - t0, 1e-9)
        sys.stderr.write(f"\rclassifying {i}/{n} ({rate:.1f} img/s)" + ("\n" if i == n else ""))
        sys.stderr.flush()


def _open_sink(path: str):
    """(file object, temporary path or None): results go to a hidden temporary file renamed on success."""
    if path == "-":
        return sys.stdout, None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    return open(tmp, "w"), tmp


def _write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vision.runtime", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="edge bundle folder (with bundle.json), or models:/NAME@ALIAS, models:/NAME/VERSION")
    ap.add_argument("inputs", nargs="+", help="image files or folders; for detection bundles also video files "
                                              "and streams (rtsp://..., http(s)://..., a camera index)")
    ap.add_argument("--out", default="-", help="JSON-lines output file (default: stdout)")
    ap.add_argument("--precision", default="int8", help="model precision in the bundle: int8 or fp32")
    ap.add_argument("--providers", default="CPUExecutionProvider",
                    help="comma-separated ONNX Runtime execution providers, in order of preference")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=3, help="classification: how many labels per image")
    add_registry_args(ap)
    reid = ap.add_argument_group("re-identification bundles")
    reid.add_argument("--query", action="append", default=None, metavar="PATH",
                      help="query crop file or folder (repeatable); each is ranked against the input crops")
    reid.add_argument("--max-distance", type=float, default=None,
                      help="only list gallery crops closer than this cosine distance")
    reid.add_argument("--save-embeddings", action="store_true",
                      help="write each input crop's embedding (one JSON line per crop) instead of rank lists; "
                           "embeddings identify people: keep them only as long as needed")
    det = ap.add_argument_group("detection bundles")
    det.add_argument("--score-threshold", type=float, default=None, help="override the bundle's score threshold")
    det.add_argument("--every", type=int, default=None, metavar="N", help="process every N-th frame / image")
    det.add_argument("--max-frames", type=int, default=None, metavar="N",
                     help="stop each input after N processed frames / images")
    det.add_argument("--video-out", default=None, metavar="MP4", help="write an annotated video (mp4v)")
    det.add_argument("--video-fps", type=float, default=None,
                     help="frame rate of --video-out (default: the source's / --every; 5 for images)")
    det.add_argument("--frames-out", default=None, metavar="DIR", help="write annotated frames (JPEG) here")
    det.add_argument("--privacy", action="store_true",
                     help="pixelate the boxes of --privacy-labels in every video/frame written")
    det.add_argument("--privacy-labels", default="person", help="comma-separated labels --privacy masks")
    det.add_argument("--zones", default=None, metavar="YAML", help="zones and counting lines (pixel coordinates)")
    det.add_argument("--timings", default=None, metavar="JSON", help="write the per-stage timing summary here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bundle = open_bundle(args.bundle, args)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if bundle.task == "detection":
        return run_detection(args, bundle)
    if bundle.task == "classification":
        return run_classification(args, bundle)
    if bundle.task == "reid":
        return run_reid(args, bundle)
    print(f"error: {bundle.root}: task {bundle.task!r} is not supported by this command", file=sys.stderr)
    return 2


def _misplaced(args: argparse.Namespace, bundle, keys: tuple[str, ...], kind: str) -> None:
    given = [f"--{k.replace('_', '-')}" for k in keys if getattr(args, k) not in (None, False)]
    if given:
        raise BundleError(f"{bundle.root}: option(s) {', '.join(given)} apply only to {kind} bundles "
                          f"(this one is {bundle.task!r})")


# -- classification ----------------------------------------------------------------------------------

def run_classification(args: argparse.Namespace, bundle) -> int:
    try:
        _misplaced(args, bundle, REID_ONLY, "re-identification")
        _misplaced(args, bundle, DETECTION_ONLY, "detection")
        files = expand_inputs(args.inputs)
        from vision.runtime.classify import Classifier

        clf = Classifier(bundle, args.precision, args.providers.split(","), args.threads)
    except (BundleError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sink, tmp = _open_sink(args.out)
    errors = 0
    t0 = time.perf_counter()
    try:
        for i, rec in enumerate(clf.classify_files(files, args.top_k), 1):
            errors += "error" in rec
            sink.write(json.dumps(rec) + "\n")
            _progress(i, len(files), t0)
    finally:
        if tmp is not None:
            sink.close()
    if tmp is not None:
        os.replace(tmp, args.out)
        print(f"wrote {len(files)} results to {args.out} ({errors} unreadable)", file=sys.stderr)
    return 1 if errors else 0


# -- re-identification -------------------------------------------------------------------------------

def run_reid(args: argparse.Namespace, bundle) -> int:
    import numpy as np

    from vision.runtime.preprocess import read_image
    from vision.runtime.reid import Embedder

    try:
        _misplaced(args, bundle, DETECTION_ONLY, "detection")
        if not args.query and not args.save_embeddings:
            raise BundleError(f"{bundle.root}: a re-identification bundle needs --query CROPS (rank the input crops "
                              f"for each query) or --save-embeddings (write the input crops' embeddings)")
        gallery = expand_inputs(args.inputs)
        queries = expand_inputs(args.query or [])
        if not gallery:
            raise FileNotFoundError(f"no image files in {' '.join(args.inputs)}")
        emb = Embedder(bundle, args.precision, args.providers.split(","), args.threads)
    except (BundleError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def embed_all(files: list[Path]) -> tuple[list[Path], np.ndarray, list[dict]]:
        ok, crops, bad = [], [], []
        for f in files:
            try:
                crops.append(read_image(f))
                ok.append(f)
            except Exception as e:  # noqa: BLE001 - an unreadable crop is reported, never skipped silently
                bad.append({"file": str(f), "error": str(e)})
        vecs = np.concatenate([emb.embed(crops[i:i + 64]) for i in range(0, len(crops), 64)]) if crops else \
            np.zeros((0, emb.dim), np.float32)
        return ok, vecs, bad

    g_files, g_emb, bad = embed_all(gallery)
    sink, tmp = _open_sink(args.out)
    try:
        for rec in bad:
            sink.write(json.dumps(rec) + "\n")
        if args.save_embeddings:
            for f, v in zip(g_files, g_emb):
                sink.write(json.dumps({"file": str(f), "embedding": [round(float(x), 6) for x in v]}) + "\n")
        if queries:
            q_files, q_emb, q_bad = embed_all(queries)
            for rec in q_bad:
                sink.write(json.dumps({"query": rec["file"], "error": rec["error"]}) + "\n")
            bad += q_bad
            dist = 1.0 - q_emb @ g_emb.T
            k = args.top_k if args.top_k and args.top_k > 0 else len(g_files)
            for qi, qf in enumerate(q_files):
                order = np.argsort(dist[qi], kind="stable")
                matches = [{"file": str(g_files[j]), "distance": round(float(dist[qi, j]), 6)} for j in order
                           if args.max_distance is None or dist[qi, j] <= args.max_distance][:k]
                sink.write(json.dumps({"query": str(qf), "matches": matches}) + "\n")
    finally:
        if tmp is not None:
            sink.close()
    if tmp is not None:
        os.replace(tmp, args.out)
        print(f"wrote results for {len(g_files)} gallery and {len(queries)} query crops to {args.out} "
              f"({len(bad)} unreadable)", file=sys.stderr)
    return 1 if bad else 0


# -- detection ---------------------------------------------------------------------------------------

def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "source"


def run_detection(args: argparse.Namespace, bundle) -> int:
    from vision.runtime.detect import ObjectDetector
    from vision.runtime.privacy import pixelate
    from vision.runtime.video import SourceError, VideoWriter, annotate, open_source, save_frame
    from vision.runtime.zones import ZoneConfigError, ZoneCounter, load_zones

    sources = []
    try:
        _misplaced(args, bundle, REID_ONLY, "re-identification")
        if args.every is not None and args.every < 1:
            raise ValueError(f"--every must be >= 1, got {args.every}")
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
        privacy_labels = [s.strip() for s in args.privacy_labels.split(",") if s.strip()]
        if args.privacy and not set(privacy_labels) & set(bundle.labels):
            raise ValueError(f"--privacy: none of {privacy_labels} is a label of {bundle.root} "
                             f"({bundle.labels}); nothing would be masked")
        zones = load_zones(args.zones) if args.zones else None
        if zones is not None:
            zones.check_labels(bundle.labels)
        det = ObjectDetector(bundle, args.precision, args.providers.split(","), args.threads, args.score_threshold)
        for spec in args.inputs:  # open everything first: a bad input fails before any output
            sources.append(open_source(spec, args.every or 1, args.max_frames, on_error="report"))
        fps = args.video_fps or next(((s.fps or 0) / s.every_n for s in sources if s.kind in ("video", "stream")
                                      and s.fps), None)
        writer = VideoWriter(args.video_out, fps) if args.video_out else None
        sink, tmp = _open_sink(args.out)
    except (BundleError, SourceError, ZoneConfigError, ValueError, OSError) as e:
        for s in sources:
            s.close()
        print(f"error: {e}", file=sys.stderr)
        return 2

    frames_dir = Path(args.frames_out) if args.frames_out else None
    records = errors = 0
    interrupted = False
    t0 = time.perf_counter()
    try:
        try:
            for src in sources:
                counter = ZoneCounter(zones) if zones is not None else None
                seen = 0
                for fr in src:
                    seen += 1
                    if fr.error is not None:  # an unreadable image: reported, never skipped
                        sink.write(json.dumps({"file": fr.path, "error": fr.error}) + "\n")
                        errors += 1
                        records += 1
                        continue
                    dets = det.detect(fr.rgb, read_ms=fr.read_ms)
                    if src.kind in ("image", "folder"):
                        rec = {"file": fr.path, "detections": dets}
                    else:
                        rec = {"source": src.name, "frame": fr.frame_index, "time": fr.time_s, "detections": dets}
                    counts = None
                    if counter is not None:
                        counts = counter.update(dets)
                        rec.update(counts)
                    sink.write(json.dumps(rec) + "\n")
                    records += 1
                    if sink is sys.stdout:
                        sink.flush()
                    if writer is not None or frames_dir is not None:
                        frame = pixelate(fr.rgb, dets, labels=privacy_labels) if args.privacy else fr.rgb
                        frame = annotate(frame, dets, zones, counts, bundle.labels)
                        if writer is not None:
                            writer.write(frame)
                        if frames_dir is not None:
                            stem = (Path(fr.path).stem if fr.path
                                    else f"{_safe(Path(src.name).stem)}_f{fr.frame_index:06d}")
                            save_frame(frames_dir / f"{records:06d}_{stem}.jpg", frame)
                    if sys.stderr.isatty():
                        rate = records / max(time.perf_counter() - t0, 1e-9)
                        sys.stderr.write(f"\rdetecting {src.name}: {seen} frames ({rate:.1f} fps)")
                        sys.stderr.flush()
                if seen == 0 and src.kind in ("video", "stream"):
                    sink.write(json.dumps({"source": src.name, "error": "no frame could be read"}) + "\n")
                    errors += 1
                    records += 1
        except KeyboardInterrupt:  # stopping a stream: keep what was processed
            interrupted = True
    except BaseException as e:
        if tmp is not None:
            sink.close()
            tmp.unlink(missing_ok=True)
        if writer is not None:
            writer.discard()
        if isinstance(e, (SourceError, OSError)):  # e.g. the annotated video / frames cannot be written there
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    finally:
        for s in sources:
            s.close()
    wall = time.perf_counter() - t0
    if tmp is not None:
        sink.close()
        os.replace(tmp, args.out)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    written = writer.frames if writer is not None else 0
    if writer is not None and writer.close() is None:
        print(f"warning: no frame processed, {args.video_out} not written", file=sys.stderr)
    summary = det.timings()
    summary.update({"wall_s": round(wall, 3), "records": records,
                    "wall_fps": round(summary["frames"] / wall, 2) if wall > 0 and summary["frames"] else None,
                    "inputs": list(args.inputs), "bundle": bundle.source or str(bundle.root),
                    "video_frames_written": written})
    if args.timings:
        _write_json_atomic(args.timings, summary)
    print(det.timings_line() + (f"; wall {summary['wall_fps']:.1f} fps incl. output" if summary["wall_fps"] else ""),
          file=sys.stderr)
    where = args.out if tmp is not None else "stdout"
    print(f"wrote {records} records to {where} ({errors} unreadable)"
          + (f", {written} frames to {args.video_out}" if writer is not None and written else "")
          + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    if interrupted:
        return 130
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
