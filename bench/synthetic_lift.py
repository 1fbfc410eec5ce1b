"""Does the scene engine help on real footage? The same detector, the same budget, trained on
(a) real only (PETS 2009 S3-MF1), (b) synthetic only (scene engine), (c) both mixed 50:50 per batch,
each scored (COCO AP50) on TUD-Campus, a real camera none of them saw. Shares its trainings with
bench/detect.py (bench/_detection_runs.py caches them). Prints one JSON line last and writes
bench/results/synthetic_lift.json.

    .venv/bin/python bench/synthetic_lift.py [--epochs 8] [--steps 40] [--size 320] [--fresh] [overrides ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _detection_runs import RESULTS, shared_data_present, train_variants  # noqa: E402

from vision.utils.io import atomic_write_json  # noqa: E402


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--test-scene", default="tud_campus", choices=["tud_campus", "pets2009_s3mf1"])
    ap.add_argument("--fresh", action="store_true")
    args, extra = ap.parse_known_args(argv)
    missing = shared_data_present()
    if missing:
        print(json.dumps({"skipped": missing}))
        return {}
    runs = train_variants(args.test_scene, args.epochs, args.steps, args.size, extra, fresh=args.fresh)
    result = {
        "ap50_real_only": round(runs["real_only"]["test"]["ap50"], 4),
        "ap50_synthetic_only": round(runs["synthetic_only"]["test"]["ap50"], 4),
        "ap50_mixed": round(runs["mixed"]["test"]["ap50"], 4),
        "ap_real_only": round(runs["real_only"]["test"]["ap"], 4),
        "ap_synthetic_only": round(runs["synthetic_only"]["test"]["ap"], 4),
        "ap_mixed": round(runs["mixed"]["test"]["ap"], 4),
        **{f"{m}_{name}": round(runs[name]["test"][m], 4) for name in ("synthetic_sprites_only", "mixed_sprites")
           if name in runs for m in ("ap50", "ap")},
        "test_scene": args.test_scene,
        "train_scene": "pets2009_s3mf1" if args.test_scene == "tud_campus" else "tud_campus",
        "images_seen_each": runs["mixed"]["images_seen"],
        "train_wall_s": {k: v["wall_s"] for k, v in runs.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "synthetic_lift.json", result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
