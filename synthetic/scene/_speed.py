"""Speed check: labelled frames/s at 640x360 with 20 agents and at 1920x1080, and re-id crops/s.

Run on one core for the reference number::

    taskset -c 0 python -m synthetic.scene._speed
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import cv2

from synthetic.scene import Scene, SceneConfig, write_dataset
from synthetic.scene.writers import MarketSink


def _config(resolution, frames, seed=0, effects=True) -> SceneConfig:
    # a 24 m square seen from its edge: 20 people, nearly all of them in view
    cams = [{"x": -11.0, "y": -3.0, "height": 6.0, "yaw": 12.0, "tilt": 28.0, "hfov": 70.0},
            {"x": 4.0, "y": -11.0, "height": 4.5, "yaw": 100.0, "tilt": 20.0, "hfov": 60.0}]
    rnd = {} if effects else {"rain_prob": 0.0, "snow_prob": 0.0, "fog_prob": 0.0, "motion_blur_prob": 0.0,
                              "defocus_prob": 0.0, "jpeg_prob": 0.0, "exposure_prob": 0.0}
    return SceneConfig(seed=seed, cameras=cams, resolution=resolution, duration=frames, fps=10.0,
                       surface="pavement", world_size=24.0, crowd_density=20 / 4.84, num_vehicles=0,
                       props={"pole": 2, "bench": 2, "bin": 2, "tree": 2}, randomization=rnd)


def measure(resolution, frames: int, effects: bool = True) -> tuple[float, float, int]:
    scene = Scene(_config(resolution, frames + 1, effects=effects))
    n_agents = len(scene.agents)
    for ci in range(len(scene.cameras)):  # warm-up: the per-camera background caches are built once
        scene.render(ci, 0)
    t0 = time.perf_counter()
    n = 0
    objs = 0
    for f in range(1, frames + 1):
        for ci in range(len(scene.cameras)):
            fr = scene.render(ci, f)
            n += 1
            objs += len(fr.objects)
    dt = time.perf_counter() - t0
    return n / dt, objs / max(n, 1), n_agents


def measure_crops(frames: int = 40) -> float:
    scene = Scene(_config((1920, 1080), frames, effects=False))
    frs = list(scene.frames(with_mask=False))
    with tempfile.TemporaryDirectory() as d:
        sink = MarketSink(scene)
        sink.begin(d)
        t0 = time.perf_counter()
        for fr in frs:
            sink.add(fr)
        dt = time.perf_counter() - t0
        n = sink.num_crops
    return n / max(dt, 1e-9)


def measure_writer(frames: int = 30) -> float:
    cfg = _config((640, 360), frames)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        write_dataset(cfg, os.path.join(d, "out"), formats=("coco", "mot", "reid"))
        dt = time.perf_counter() - t0
    return frames * len(cfg.cameras) / dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60, help="frames per camera (default 60)")
    args = ap.parse_args(argv)
    print(f"cv2 threads {cv2.getNumThreads()}, cpu affinity {sorted(os.sched_getaffinity(0))}")
    for res, nf in (((640, 360), args.frames), ((1920, 1080), max(4, args.frames // 3))):
        for eff in (True, False):
            fps, per, na = measure(res, nf, eff)
            print(f"{res[0]}x{res[1]} {'all effects' if eff else 'no post effects'}: {fps:6.1f} labelled frames/s "
                  f"({na} agents, {per:.1f} labelled objects per frame)")
    print(f"re-id crops (1920x1080 frames): {measure_crops(max(8, args.frames // 4)):.0f} crops/s")
    print(f"write_dataset coco+mot+reid at 640x360 (render + JPEG + files, incl. setup): "
          f"{measure_writer(args.frames // 2):.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
