"""Procedural synthetic training-data generators for the video-surveillance vision toolkit."""

__version__ = "0.2.0"
