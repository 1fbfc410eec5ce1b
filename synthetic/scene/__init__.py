"""Procedural multi-camera surveillance scene simulator (numpy + OpenCV, no 3-D library).

A calibrated-camera world with a textured ground, surroundings, occluding
props and animated people/vehicles with persistent identities, rendered per
camera with an instance mask so every label (visible and amodal boxes,
visible fraction, truncation, pixel height) is exact; people on foot avoid
each other and the props (:mod:`.crowd`); per-frame domain randomization,
camera faults included (:mod:`.faults`, labels stay honest under them);
COCO / MOT / Market-1501 writers with provenance.

Usage::

    from synthetic.scene import SceneConfig, Scene, write_dataset
    cfg = SceneConfig(seed=1, cameras=3, duration=50, surface="road", crowd_density=1.5)
    for frame in Scene(cfg).frames():
        frame.image, frame.objects, frame.params
    write_dataset(cfg, "data/scene_v1", formats=("coco", "mot", "reid"))
"""

from .agents import Person, PersonLook, Trajectory, Vehicle
from .camera import Camera
from .crowd import CrowdSim, footprint_radius, obstacle_boxes
from .faults import CAMERA_FAULTS, FAULT_LABEL_RULES, CameraFault
from .randomize import (
                        DEFAULT_RANGES,
                        apply_defocus,
                        apply_effects,
                        apply_exposure,
                        apply_fog,
                        apply_glare,
                        apply_jpeg,
                        apply_motion_blur,
                        apply_night_ir,
                        apply_rain,
                        apply_sensor_noise,
                        apply_snow,
                        light_from_params,
                        sample_params,
)
from .render import Light, RenderResult, render_frame
from .scene import CATEGORIES, DEFAULT_CAMERA_RANGES, Frame, Scene, SceneConfig
from .world import PROP_KINDS, SURFACES, Prop, World
from .writers import CocoSink, MarketSink, MotSink, write_coco, write_dataset, write_mot, write_reid

__all__ = [
    "Camera", "World", "Prop", "SURFACES", "PROP_KINDS", "Person", "PersonLook", "Vehicle", "Trajectory",
    "Light", "RenderResult", "render_frame", "SceneConfig", "Scene", "Frame", "CATEGORIES", "DEFAULT_CAMERA_RANGES",
    "DEFAULT_RANGES", "sample_params", "light_from_params", "apply_effects", "apply_glare", "apply_fog", "apply_rain",
    "apply_snow", "apply_night_ir", "apply_exposure", "apply_defocus", "apply_motion_blur", "apply_sensor_noise",
    "apply_jpeg", "CocoSink", "MotSink", "MarketSink", "write_coco", "write_mot", "write_reid", "write_dataset",
    "CAMERA_FAULTS", "FAULT_LABEL_RULES", "CameraFault", "CrowdSim", "footprint_radius", "obstacle_boxes",
]
