"""Sweep results and their statistics. Imports pydantic, numpy, scipy, service.config,
service.rundir; no torch or Ray."""
