"""Benchmark of the detection recipe on real footage: train on PETS 2009 (+ scene-engine frames), test
on TUD-Campus, a camera never seen in training.

Trains real-only, synthetic-only and mixed detectors under one budget (bench/_detection_runs.py), and the
same two with the engine's real-appearance people (MARS crops, when ../shared/data/mars_mini exists),
exports the mixed one with real-appearance people (the procedural mixed one without the MARS crops;
``exported_variant``; chosen before any measurement, not by test AP) as fp32 + int8 through the AP
parity gate, and measures held-out AP50/AP of PyTorch, ONNX
fp32 and int8, training images/s, and the runtime's end-to-end frames/s (JPEG decode, letterbox,
inference, decoding + NMS) for fp32 and int8 with 2 threads. Prints one JSON line last and writes
bench/results/detect.json.

    .venv/bin/python bench/detect.py [--epochs 8] [--steps 40] [--size 320] [--fresh] [train overrides ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _detection_runs import RESULTS, shared_data_present, train_variants  # noqa: E402

from vision.utils.io import atomic_write_json  # noqa: E402


def runtime_fps(bundle: Path, precision: str, frames: list[Path], threads: int = 2) -> dict:
    from vision.runtime.detect import ObjectDetector
    from vision.runtime.preprocess import read_image

    det = ObjectDetector(bundle, precision, threads=threads)
    for f in frames[:5]:  # warm-up
        det.detect(read_image(f))
    det.reset_timings()
    t0 = time.perf_counter()
    for f in frames:
        t = time.perf_counter()
        rgb = read_image(f)
        det.detect(rgb, read_ms=(time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - t0
    s = det.timings()
    return {"fps": round(len(frames) / wall, 1), "stages": s["stages"]}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--test-scene", default="tud_campus", choices=["tud_campus", "pets2009_s3mf1"])
    ap.add_argument("--fresh", action="store_true", help="retrain even when cached runs exist")
    args, extra = ap.parse_known_args(argv)
    missing = shared_data_present()
    if missing:
        print(json.dumps({"skipped": missing}))
        return {}
    from hydra import compose, initialize_config_dir

    import vision.config  # noqa: F401
    from vision.export.pipeline import run as run_export

    runs = train_variants(args.test_scene, args.epochs, args.steps, args.size, extra, fresh=args.fresh)
    # exported (chosen before measuring, never by test AP): real + engine frames with real-appearance
    # people where the crops exist, else real + procedural engine frames
    exported = "mixed_sprites" if "mixed_sprites" in runs else "mixed"
    mixed = runs[exported]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bundle = RESULTS / f"detect-bundle-{stamp}"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        ecfg = compose("export", overrides=[f"checkpoint={mixed['best_checkpoint']}", f"output_dir={bundle}",
                                            "progress=false", "logger.log_to_run=false"])
        run_export(ecfg)
    doc = json.loads((bundle / "bundle.json").read_text())
    parity = doc["parity"]
    frames = sorted((REPO.parent / "shared" / "data" / args.test_scene).rglob("*.jpg"))
    fps = {p: runtime_fps(bundle, p, frames) for p in ("fp32", "int8")}
    result = {
        "ap50_torch": round(parity["torch"]["ap50"], 4),
        "ap_torch": round(parity["torch"]["ap"], 4),
        "ap50_onnx_fp32": round(parity["onnx_fp32"]["ap50"], 4),
        "ap50_onnx_int8": round(parity["onnx_int8"]["ap50"], 4),
        "ap_onnx_int8": round(parity["onnx_int8"]["ap"], 4),
        "int8_ap50_drop": round(parity["onnx_int8"]["ap50_drop"], 4),
        "train_img_per_s": round(mixed["train_img_per_s"] or 0.0, 1),
        "runtime_fps_fp32": fps["fp32"]["fps"],
        "runtime_fps_int8": fps["int8"]["fps"],
        "ap50_real_only": round(runs["real_only"]["test"]["ap50"], 4),
        "ap50_synthetic_only": round(runs["synthetic_only"]["test"]["ap50"], 4),
        "ap50_mixed": round(runs["mixed"]["test"]["ap50"], 4),
        **{f"ap50_{name}": round(runs[name]["test"]["ap50"], 4) for name in ("synthetic_sprites_only", "mixed_sprites")
           if name in runs},
        "exported_variant": exported,
        "ap50_by_height": {name: {k: round(v["ap50"], 4) for k, v in run["test"]["size"].items()}
                           for name, run in runs.items()},
        "test_scene": args.test_scene,
        "test_images": parity["num_images"],
        "budget": {"epochs": args.epochs, "steps_per_epoch": args.steps, "images_seen": mixed["images_seen"],
                   "train_wall_s": {k: v["wall_s"] for k, v in runs.items()}},
        "input_size": [args.size, args.size],
        "runtime_stages_ms_int8": {k: v["mean_ms"] for k, v in fps["int8"]["stages"].items()},
        "bundle": str(bundle),
    }
    atomic_write_json(RESULTS / "detect.json", result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
