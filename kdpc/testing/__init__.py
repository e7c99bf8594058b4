"""Fixtures for tests and benchmarks: synthetic teachers and stores. Not public API."""
