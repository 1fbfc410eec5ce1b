"""Video-surveillance vision toolkit: recipes, data, models, export and an edge runtime."""
__version__ = "0.1.0"
