"""``python -m vision.runtime BUNDLE INPUT... --out results.jsonl``: classify images from files/folders."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from vision.runtime.bundle import BundleError, load_bundle
from vision.runtime.preprocess import IMAGE_EXTENSIONS


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vision.runtime", description=__doc__)
    ap.add_argument("bundle", help="edge bundle folder (with bundle.json)")
    ap.add_argument("inputs", nargs="+", help="image files or folders")
    ap.add_argument("--out", default="-", help="JSON-lines output file (default: stdout)")
    ap.add_argument("--precision", default="int8", help="model precision in the bundle: int8 or fp32")
    ap.add_argument("--providers", default="CPUExecutionProvider",
                    help="comma-separated ONNX Runtime execution providers, in order of preference")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle)
        files = expand_inputs(args.inputs)
        if bundle.task != "classification":
            raise BundleError(f"{bundle.root}: task {bundle.task!r} is not supported by this command yet")
        from vision.runtime.classify import Classifier

        clf = Classifier(bundle, args.precision, args.providers.split(","), args.threads)
    except (BundleError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sink = sys.stdout if args.out == "-" else None
    tmp = None
    if sink is None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        sink = open(tmp, "w")
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


if __name__ == "__main__":
    sys.exit(main())
