"""Metrics shared by training, export parity checks and benchmarks (numpy, no torch)."""
