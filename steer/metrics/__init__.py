"""Metrics computed on every sample, and the statistics over them."""
