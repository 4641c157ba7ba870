"""Configs: the typed schema of every group, the constraints on its values, and composing and checking a run's."""
