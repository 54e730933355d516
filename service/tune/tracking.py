"""Experiment trackers as Ray Tune logger callbacks, from the spec's `tracking:` block."""

from __future__ import annotations


def tracking_callbacks(spec, plan) -> list:
    """The Tune callbacks that send every trial to the trackers the spec names."""
    return []
