"""Contact sheet for eyeballing the renderer: 2 cameras x (day, night, rain).

    python -m synthetic.scene._sheet /tmp/scene_sheet.png [--seed 3] [--surface road] [--size 640 360]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from synthetic.scene import Scene, SceneConfig

CONDITIONS = {
    "day": {"time_of_day": "day", "rain_prob": 0.0, "snow_prob": 0.0, "fog_prob": 0.0},
    "night": {"time_of_day": "night", "night_ir_prob": 0.0, "rain_prob": 0.0, "snow_prob": 0.0, "fog_prob": 0.0},
    "rain": {"time_of_day": {"day": 1.0, "overcast": 1.0}, "rain_prob": 1.0, "snow_prob": 0.0, "fog_prob": 0.0},
}


def contact_sheet(seed=3, surface="road", size=(640, 360), cameras=2, density=None, boxes=False,
                  conditions=CONDITIONS) -> np.ndarray:
    rows = []
    for ci in range(cameras):
        row = []
        for k, (name, rnd) in enumerate(conditions.items()):
            cfg = SceneConfig(seed=seed, cameras=cameras, resolution=tuple(size), duration=40, fps=5.0,
                              surface=surface, crowd_density=density if density is not None else
                              (3.0 if surface == "road" else 1.5),
                              num_vehicles=4 if surface in ("road", "pavement", "grass") else 0,
                              randomization={"motion_blur_prob": 0.0, "defocus_prob": 0.0, **rnd})
            fr = Scene(cfg).render(ci, 12 * k)
            img = cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR)
            if boxes:
                for o in fr.objects:
                    if o["bbox_visible"] is None:
                        continue
                    x0, y0, x1, y1 = (int(round(v)) for v in o["bbox_visible"])
                    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0) if o["category"] == "person"
                                  else (255, 128, 0), 1)
            cv2.putText(img, f"cam{ci + 1} {name} t={fr.time:.1f}s", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 255, 255), 1, cv2.LINE_AA)
            row.append(img)
        rows.append(np.hstack(row))
    return np.vstack(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--surface", default="road")
    ap.add_argument("--size", type=int, nargs=2, default=(640, 360))
    ap.add_argument("--density", type=float, default=None)
    ap.add_argument("--boxes", action="store_true", help="draw the visible boxes")
    a = ap.parse_args(argv)
    sheet = contact_sheet(a.seed, a.surface, tuple(a.size), density=a.density, boxes=a.boxes)
    cv2.imwrite(a.out, sheet)
    print(a.out, sheet.shape)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
