"""Benchmarking and reproducibility suite for collaborative CNN inference."""
