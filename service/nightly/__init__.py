"""Nightly sweeps: timer units and one night's run compared with the previous night; runs
service.submit as a subprocess and reads service.results, never imports Ray."""
