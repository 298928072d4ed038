"""Stub: see docs/federation.md."""
