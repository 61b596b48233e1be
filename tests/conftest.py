"""Shared fixtures and helpers for the behaviour-grouped test files."""
