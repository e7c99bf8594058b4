"""kdpc: offline knowledge distillation for point-cloud models."""

__version__ = "0.1.0"
