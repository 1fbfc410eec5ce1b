"""Config plumbing: OmegaConf resolvers, schema validation before any work starts."""
from vision.config.resolvers import register_resolvers
from vision.config.validate import validate

__all__ = ["register_resolvers", "validate"]
