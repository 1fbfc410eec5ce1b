"""Training losses beyond the plain cross-entropy (metric learning for re-identification)."""
