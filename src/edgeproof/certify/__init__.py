"""Certification: what can be proved about a model (bounds, branch-and-bound, smoothing)."""
