"""The ``protect`` command (moves to the CLI package)."""
