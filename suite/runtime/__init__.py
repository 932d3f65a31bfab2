"""Distributed runtime: workers and a coordinator execute a plan for real and time it."""
