"""The `aps` command: one CLI over the three stages (pipeline, trainer, evaluation)."""
