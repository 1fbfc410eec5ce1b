"""Benchmark of the FiftyOne curation path on 5,000 synthetic frames with labels and provenance.

* ``load_samples_per_s``: the scene engine's COCO output (320x180 frames, boxes, every generator parameter)
  loaded into a new persistent FiftyOne dataset (image headers checked, provenance fields, one bulk insert);
* ``near_dup_s``: exact + near-duplicate search over them (perceptual DCT hashes and embeddings, all pairs,
  split leaks, uniqueness, the FiftyOne similarity index), :func:`vision.curation.brain.find_duplicates`;
* ``export_samples_per_s``: the whole dataset exported as a COCO snapshot (images copied, manifest with
  every file's sha256).

Generating the frames is not timed (they are cached under ``$VISION_CACHE_DIR`` or ``.cache/vision``).
The database is a private ``mongod`` in a temporary folder (``--database-uri`` to use another one).
Prints one JSON line last and writes it to ``bench/results/curate.json``.

    .venv/bin/python bench/curate.py [--frames 5000] [--database-uri mongodb://...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def frames_source(n: int, cache: Path):
    from synthetic.detection_source import SceneDetectionSource

    cameras, frames = 2, 50
    scenes = max(1, -(-n // (cameras * frames)))
    return SceneDetectionSource(str(cache), scenes=scenes, cameras=cameras, frames=frames, resolution=(320, 180),
                                seed=0, progress=False, name="bench_scenes")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--database-uri", default=None, help="an existing MongoDB (default: a private mongod)")
    ap.add_argument("--keep", action="store_true", help="keep the dataset and the snapshot")
    args = ap.parse_args(argv)

    cache = Path(os.environ.get("VISION_CACHE_DIR", REPO / ".cache" / "vision")) / "bench-curate"
    t = time.perf_counter()
    src = frames_source(args.frames, cache)
    scene_dir = src.ensure()
    gen_s = time.perf_counter() - t

    from vision.curation.db import import_fiftyone, start_private_mongod

    work = Path(tempfile.mkdtemp(prefix="bench-curate-"))
    mongod = None
    uri = args.database_uri
    if uri is None:
        mongod, uri = start_private_mongod(work / "db")
    try:
        fo = import_fiftyone(database_uri=uri)
        fo.config.database_validation = False
        from vision.curation.brain import find_duplicates
        from vision.curation.export import export_snapshot
        from vision.curation.load import get_dataset, load_samples, read_source

        fmt, samples, problems, info = read_source(scene_dir, "scene", name="bench_scenes")
        samples = samples[:args.frames]
        name = f"bench-curate-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        rep = load_samples(name, samples, format=fmt, path=str(scene_dir), source_name="bench_scenes",
                           default_kind="synthetic", problems=problems, info=info)
        load_s = time.perf_counter() - t
        ds = get_dataset(name)
        n = len(ds)

        t = time.perf_counter()
        dup = find_duplicates(ds, "dedup")
        near_s = time.perf_counter() - t

        t = time.perf_counter()
        snap = export_snapshot(ds, name, work / "snapshots", formats=["coco"])
        export_s = time.perf_counter() - t
        files = sum(1 for p in snap.rglob("*") if p.is_file())
        result = {
            "load_samples_per_s": round(n / load_s, 1),
            "near_dup_s": round(near_s, 2),
            "export_samples_per_s": round(n / export_s, 1),
            "samples": n,
            "boxes": rep.boxes,
            "resolution": [320, 180],
            "load_s": round(load_s, 2),
            "export_s": round(export_s, 2),
            "near_duplicates": dup["near_duplicates"],
            "near_duplicate_groups": dup["near_duplicate_groups"],
            "exact_duplicates": dup["exact_duplicates"],
            "snapshot_files": files,
            "generation_s_not_timed": round(gen_s, 1),
            "database": "private mongod" if mongod is not None else "external",
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
        }
        if not args.keep:
            ds.delete()
    finally:
        if mongod is not None:
            mongod.terminate()
            mongod.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "curate.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
