"""Example rollout functions for `rollout.function`; each has a config in config/examples/."""
