"""The sweep's report (report.html, report.md, report.json) from its results; imports
matplotlib, optuna, service.results and service.analysis, never Ray."""
