"""Video-surveillance vision toolkit: recipes, data, models, export and an edge runtime."""
import os as _os

# Nothing calls home at run time: albumentations otherwise asks PyPI for its latest version on every import
# (every training, every spawned worker or test process), which hangs up to its timeout on offline machines.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
