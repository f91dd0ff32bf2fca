"""Loads the conformance harness so that `pytest features/` works from the repository root."""

pytest_plugins = ["steps.plugin", "steps.report.plugin"]
