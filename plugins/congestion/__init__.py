"""Congestion-control algorithms, each a plugin that registers itself by name."""
