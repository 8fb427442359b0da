"""Troupe's contracts: problem specs, event schemas, artifact manifests and the model registry.

This package sits at the bottom of the dependency graph. It may import pydantic,
pyarrow and numpy — never torch, never another Troupe package.
"""
