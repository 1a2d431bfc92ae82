"""Examples to copy from; importable from the repository root (``examples.hooks.<name>``)."""
