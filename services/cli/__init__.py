"""The ``tagstream`` command (typer)."""
