"""steer: activation-steering experiments with emotion vectors on open language models."""

__version__ = "0.1.0"
