"""Triton Inference Server: model-repository export from the registry and a local launcher for tests."""
