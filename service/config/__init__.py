"""Search spaces and the settings they fix (spec, blocks, YAML loader, train and data configs,
shipped spaces, JSON Schema); imports pydantic, PyYAML, optuna (Optuna checks a pruner's
settings) and service.models' torch-free registry, never torch or Ray."""
