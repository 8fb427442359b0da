"""Helpers shared by tests (not fixtures): small ONNX policies, request builders."""
