"""Small shared helpers (atomic file writes, hashing, environment facts)."""
