"""Models: the architecture registry and the training loop (docs/outputs.md)."""
