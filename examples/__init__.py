"""dataforge's examples (importable from the repository root: `examples.rollouts.…`)."""
