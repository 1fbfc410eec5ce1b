"""Benchmark of the synthetic scene engine on one CPU core.

Labelled frames/s at 640x360 with 20 agents (target >= 50), at 1920x1080, and re-id crops/s.
Prints one JSON line last and writes it to bench/results/synthetic.json.

    .venv/bin/python bench/synthetic.py
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> dict:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says
    import cv2

    cv2.setNumThreads(1)
    from synthetic.scene._speed import measure, measure_crops, measure_writer

    fps_small, objs_small, agents = measure((640, 360), 60)
    fps_big, _, _ = measure((1920, 1080), 20)
    result = {
        "frames_per_s_640x360": round(fps_small, 1),
        "frames_per_s_1920x1080": round(fps_big, 1),
        "reid_crops_per_s": round(measure_crops(15), 1),
        "written_frames_per_s_640x360": round(measure_writer(30), 1),
        "agents": agents,
        "labelled_objects_per_frame": round(objs_small, 1),
        "cores": 1,
    }
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
