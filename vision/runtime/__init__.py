"""The reference edge runtime: numpy + onnxruntime + Pillow only (no torch), shippable alone.

    python -m vision.runtime BUNDLE INPUT... --out results.jsonl
"""
from vision.runtime.bundle import Bundle, BundleError, load_bundle
from vision.runtime.classify import Classifier

__all__ = ["Bundle", "BundleError", "load_bundle", "Classifier"]
