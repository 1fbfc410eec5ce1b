"""The reference edge runtime: numpy + onnxruntime + Pillow (+ OpenCV for video, PyYAML for zones),
no torch, shippable alone.

    python -m vision.runtime BUNDLE INPUT... --out results.jsonl
    python -m vision.runtime models:/NAME@ALIAS INPUT... --tracking-uri URI   (a registered bundle: needs MLflow)

Classification bundles: :class:`Classifier`; detection bundles: :class:`vision.runtime.detect.ObjectDetector`
(images, folders, videos and streams through :mod:`vision.runtime.video`, privacy pixelation in
:mod:`vision.runtime.privacy`, zone occupancy and line crossings in :mod:`vision.runtime.zones`).
"""
from vision.runtime.bundle import Bundle, BundleError, load_bundle
from vision.runtime.classify import Classifier

__all__ = ["Bundle", "BundleError", "load_bundle", "Classifier"]
