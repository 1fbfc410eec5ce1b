"""Benchmark of the classification recipe on real NEU-DET images (../shared/data/neu_det).

Trains from scratch with a fixed seed and epoch budget, exports the edge bundle (fp32 + int8,
parity-gated), then measures held-out top-1 of PyTorch / ONNX fp32 / ONNX int8, training
throughput, ONNX Runtime latency per image (median of repeated runs in this process) and sizes.
Prints one JSON line last and writes it to bench/results/classify.json.

    .venv/bin/python bench/classify.py [train overrides ...]
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import vision.config  # noqa: E402,F401


def latency_ms(clf, x: np.ndarray, repeats: int = 300) -> float:
    for _ in range(20):
        clf.logits(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        clf.logits(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str]) -> dict:
    data = Path(REPO.parent / "shared" / "data" / "neu_det")
    if not data.is_dir():
        print(json.dumps({"skipped": f"{data} is absent"}))
        return {}
    from vision.export.pipeline import run as run_export
    from vision.runtime.classify import Classifier
    from vision.runtime.preprocess import preprocess, read_image
    from vision.training import run as run_train

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = REPO / "bench" / "results" / f"classify-{stamp}"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        tcfg = compose("train", overrides=["experiment=neu_det", "logger=none", f"run_name=bench-{stamp}",
                                           f"paths.output_dir={out}/train", "trainer.enable_progress_bar=false",
                                           *argv])
        t0 = time.time()
        run_train(tcfg)
        train_s = time.time() - t0
        run = json.loads((out / "train" / "run.json").read_text())
        ecfg = compose("export", overrides=[f"checkpoint={run['best_checkpoint']}", f"output_dir={out}/bundle",
                                            "progress=false", "logger.log_to_run=false"])
        bundle = run_export(ecfg)
    doc = json.loads((bundle / "bundle.json").read_text())
    top1 = doc["metrics"]["test_top1"]
    sample = next((data / "IMAGES").glob("*.jpg"))
    lat = {}
    for prec in ("fp32", "int8"):
        clf = Classifier(bundle, prec)
        x = preprocess(read_image(sample), clf.spec)[None]
        lat[prec] = latency_ms(clf, x)
    size = {p: (bundle / f"model_{p}.onnx").stat().st_size / 1e6 for p in ("fp32", "int8")}
    result = {
        "top1_torch": round(top1["torch"], 4),
        "top1_onnx_fp32": round(top1["onnx_fp32"], 4),
        "top1_onnx_int8": round(top1["onnx_int8"], 4),
        "train_img_per_s": round(run["train_img_per_s"], 1),
        "latency_ms_fp32": round(lat["fp32"], 3),
        "latency_ms_int8": round(lat["int8"], 3),
        "size_mb_fp32": round(size["fp32"], 3),
        "size_mb_int8": round(size["int8"], 3),
        "int8_speedup": round(lat["fp32"] / lat["int8"], 2),
        "int8_size_ratio": round(size["fp32"] / size["int8"], 2),
        "test_images": doc["parity"]["num_images"],
        "epochs": int(tcfg.trainer.max_epochs),
        "train_wall_s": round(train_s, 1),
        "model": f"{tcfg.model.arch} x{tcfg.model.width_mult} @ {list(tcfg.data.preprocess.size)}",
        "bundle": str(bundle),
    }
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "classify.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
