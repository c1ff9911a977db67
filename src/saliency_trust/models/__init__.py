"""Models: the architecture registry and the training loop (SPEC 4)."""
