"""Stubs generated from proto/scitq/v1/scitq.proto by python/generate_stubs.py: do not edit."""
