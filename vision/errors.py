"""Errors the toolkit raises for bad input: each names the file or key and the problem."""
from __future__ import annotations


class VisionError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(VisionError):
    """A configuration key is unknown, has the wrong type, or a value is invalid."""


class DataError(VisionError):
    """Input data is missing, corrupt or inconsistent (names the file and the problem)."""


class CheckpointError(VisionError):
    """A checkpoint is missing, unreadable, or belongs to another task."""


class ParityError(VisionError):
    """An exported model disagrees with its PyTorch source beyond the configured tolerance."""


class BundleError(VisionError):
    """An edge bundle is incomplete, tampered with, or of an unsupported kind."""
