"""The training loop, its data and data parallelism (`fit`, datasets, DDP); imports torch,
torchvision and service.config/service.models, never Ray (it runs on machines without it)."""
