"""Training: simulators, networks, algorithms, off-policy evaluation, ONNX export. May import models and torch."""
