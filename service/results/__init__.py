"""Sweep results. Imports pydantic, scipy, service.config, service.tune.paths; no torch or Ray."""
