"""Conformance reports: per-scenario verdicts rolled up into requirement and gate verdicts (docs/reports.md)."""
