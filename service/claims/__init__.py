"""The three papers' claims measured on finished claim sweeps; imports service.results,
service.report and service.analysis, never Ray (its `run` command starts service.submit)."""
