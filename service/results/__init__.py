"""Sweep results and their statistics. Imports pydantic, numpy, scipy, service.config,
service.tune.paths; no torch or Ray."""
