"""Fuzzing entry points, one per parser (see docs/fuzzing.md)."""
